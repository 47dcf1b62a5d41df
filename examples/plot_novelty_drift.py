"""
==============================================
Flagging a drifting stream with novelty scores
==============================================

A continual learner is told nothing about what its stream will bring next.
:meth:`KeyValueBottleneckClassifier.score_samples
<skkvb.KeyValueBottleneckClassifier.score_samples>` says how familiar each input
is: low when it fetches keys that no training sample fetched, or lies far from
the keys it fetches. This example feeds a digits classifier a stream that
drifts -- classes it has never been taught appear, then a sensor fault
corrupts every image -- and flags the inputs that score below what familiar
inputs score.
"""

# %%
# A classifier of five digits
# ---------------------------
#
# Keys are fitted once, without labels, on the training images of all ten
# digits (the unlabelled data a stream's keys come from), then frozen. The
# classifier is taught digits 0-4 only, with ``partial_fit`` so that its
# label set can grow later.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split

from skkvb import KeyCodebook, KeyValueBottleneckClassifier

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.5, random_state=0, stratify=y
)
keys = KeyCodebook(n_codebooks=64, n_keys=256, key_dim=8, random_state=0).fit(X_train)
clf = KeyValueBottleneckClassifier(codebook=FrozenEstimator(keys), random_state=0)
known = y_train < 5
clf.partial_fit(X_train[known], y_train[known])
print(f"classes learned: {clf.classes_}")

# %%
# A threshold from familiar inputs
# --------------------------------
#
# Scores have no fixed scale, so the alarm threshold comes from inputs known
# to be familiar: the 5th percentile of the scores of 150 held-out images of
# digits 0-4. About 5% of familiar inputs will be flagged by mistake.
rng = np.random.RandomState(0)
familiar = rng.permutation(np.flatnonzero(y_test < 5))
reference, familiar = familiar[:150], familiar[150:]
unfamiliar = np.flatnonzero(y_test >= 5)
threshold = np.percentile(clf.score_samples(X_test[reference]), 5)
print(f"threshold: {threshold:.2f}")

# %%
# The stream
# ----------
#
# Batches of 20 test images, in four stretches of ten batches:
#
# 1. digits 0-4 only;
# 2. digits 5-9 creep in, from 10% of a batch to all of it;
# 3. the labels of digits 5-9 have arrived and been learned (one more
#    ``partial_fit``); every digit appears;
# 4. a sensor fault: the left half of every image goes dark.
#
# Each batch is scored before anything is learned from it.
BATCH, STRETCH = 20, 10


def batch(share_unfamiliar):
    n_new = int(round(share_unfamiliar * BATCH))
    rows = np.r_[rng.choice(familiar, BATCH - n_new), rng.choice(unfamiliar, n_new)]
    return X_test[rows], y_test[rows] >= 5


def dark_left_half(images):
    return np.where(np.arange(64) % 8 < 4, 0.0, images)


stream = []  # (scores, kind of each input) per batch
for i in range(STRETCH):
    images, new = batch(0.0)
    stream.append((clf.score_samples(images), np.where(new, "new digit", "digit 0-4")))
for i in range(STRETCH):
    images, new = batch((i + 1) / STRETCH)
    stream.append((clf.score_samples(images), np.where(new, "new digit", "digit 0-4")))
clf.partial_fit(X_train[~known], y_train[~known])  # the labels of 5-9 arrive
for i in range(STRETCH):
    images, new = batch(0.5)
    stream.append((clf.score_samples(images), np.where(new, "new digit", "digit 0-4")))
for i in range(STRETCH):
    images, _ = batch(0.5)
    scores = clf.score_samples(dark_left_half(images))
    stream.append((scores, np.full(BATCH, "corrupted")))

flagged = np.array([np.mean(scores < threshold) for scores, _ in stream])
names = ["digits 0-4", "5-9 creep in", "5-9 learned", "sensor fault"]
for k, name in enumerate(names):
    print(f"{name:>13}: {flagged[k * STRETCH:(k + 1) * STRETCH].mean():.0%} of inputs flagged")

# %%
# While the stream holds only what was learned, about 5% of inputs are
# flagged, as the threshold intends. As digits 5-9 creep in, the share of
# flagged inputs follows their share of the batch: their heads fall in cells
# that no training sample reached, although the keys cover them as well as
# digits 0-4. Once their labels are learned the alarm falls back, and the
# sensor fault sets it off for every input: those images lie far from every
# key. (Scores are log-probabilities under the samples learned: learning five
# more digits spreads that probability, so digits 0-4 score a little lower
# afterwards; recompute the threshold after each learning step.)
colors = {"digit 0-4": "C0", "new digit": "C1", "corrupted": "C3"}
fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
for b, (scores, kinds) in enumerate(stream):
    for kind, color in colors.items():
        mine = kinds == kind
        position = b + rng.uniform(-0.3, 0.3, mine.sum())
        top.scatter(position, scores[mine], s=6, color=color, alpha=0.6)
for kind, color in colors.items():
    top.scatter([], [], s=12, color=color, label=kind)
top.axhline(threshold, color="k", lw=1, ls="--", label="threshold")
top.set_ylabel("score_samples")
top.legend(loc="lower left", fontsize=8, ncol=2)
bottom.bar(np.arange(len(stream)), flagged, color="C7")
bottom.set_ylabel("share flagged")
bottom.set_xlabel("batch of the stream")
for k, name in enumerate(names):
    for ax in (top, bottom):
        ax.axvline(k * STRETCH - 0.5, color="k", lw=0.5)
    bottom.text(k * STRETCH + STRETCH / 2 - 0.5, 1.02, name, ha="center", fontsize=8)
bottom.set_ylim(0, 1.15)
fig.tight_layout()
plt.show()

# %%
# What the score does not know
# ----------------------------
#
# The score measures familiarity, not correctness: a familiar input can still
# be misclassified, and a faint corruption that leaves the heads near their
# keys goes unnoticed. Which of its two terms carries the signal depends on
# where the keys come from -- the "Novelty" section of the user guide measures
# both, on frozen-encoder embeddings, against the usual baselines.
