"""
=====================================================
Key usage: fetch counts, never-used keys and masking
=====================================================

Every training sample fetches one key per codebook, and only the values of
those keys are ever trained. :attr:`KeyValueBottleneckClassifier.key_usage_
<skkvb.KeyValueBottleneckClassifier>` counts how many training samples fetched
each key. This example looks at those counts, at the keys that no training
sample ever fetched, and at what ``mask_unused_keys`` does with them at
prediction time.
"""

# %%
# Keys and values on digits
# -------------------------
#
# 64 codebooks of 512 keys each, fitted without labels on the training images
# (raw pixels, unscaled), then frozen; the values are learned from the
# labelled training set with the default counting values.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split

from skkvb import KeyCodebook, KeyValueBottleneckClassifier

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.3, random_state=0, stratify=y
)

codebook = KeyCodebook(n_codebooks=64, n_keys=512, key_dim=8, random_state=0).fit(X_train)
clf = KeyValueBottleneckClassifier(codebook=FrozenEstimator(codebook), random_state=0)
clf.fit(X_train, y_train)
print(f"test accuracy: {clf.score(X_test, y_test):.3f}")

# %%
# Fetch counts
# ------------
#
# ``key_usage_`` has one row per codebook and one column per key. Each row
# sums to the number of training samples, since every sample fetches exactly
# one key per codebook. The histogram pools all codebooks.
usage = clf.key_usage_
print(f"key_usage_ shape {usage.shape}; every row sums to {usage.sum(1)[0]} samples")
never_used = usage == 0
print(f"never-used keys: {never_used.mean():.1%}")

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.hist(usage.ravel(), bins=np.arange(usage.max() + 2) - 0.5, color="C0")
ax.set_xlabel("training samples that fetched the key")
ax.set_ylabel("keys (all codebooks)")
ax.set_title("Fetch counts of 64 x 512 keys, 1,257 training samples")
fig.tight_layout()
plt.show()

# %%
# With 512 keys per codebook and 1,257 samples, a key is fetched about 2.5
# times on average; the keys in the bar at zero were never fetched.
#
# Never-used keys can be pruned
# -----------------------------
#
# A key that no training sample fetched has the same value in every class
# column: with counting values all its counts are zero, so every class gets
# ``log(1 / n_classes)``; with SGD values (``value_update="sgd"``) it keeps
# the zeros it started with. Either way it favours no class and carries no
# information. Such keys could be dropped from a deployed model, and their
# values with them.
values = clf.values_  # (n_codebooks, n_keys, n_classes)
unused_rows = values[never_used]
print(f"values of never-used keys: from {unused_rows.min():.4f} to {unused_rows.max():.4f}; "
      f"log(1 / 10) = {np.log(0.1):.4f}")
print(f"value rows worth keeping: {(~never_used).sum()} of {never_used.size}")

# %%
# What a test sample does with a never-used key
# ---------------------------------------------
#
# A test sample may still land on a never-used key in some codebooks. With
# ``mask_unused_keys=False`` it fetches that class-neutral value there, which
# moves every class's logit alike: that codebook abstains. With ``mask_unused_keys=True`` (the default, as in the paper's
# code) the never-used keys are left out of the search, so each head snaps to
# its nearest *used* key and every codebook votes. This is what pruning the
# never-used keys would do.
#
# The fewer the labelled samples, the more keys are never used and the more
# test heads land on them. We train on the first ``n`` training samples, for
# growing ``n``, and score with and without the mask.
sizes = [30, 60, 120, 250, 500, 1257]
landed, with_mask, without_mask = [], [], []
codes_test = codebook.transform(X_test)  # (n_test, n_codebooks), keys are frozen
for n in sizes:
    clf = KeyValueBottleneckClassifier(codebook=FrozenEstimator(codebook), random_state=0)
    clf.fit(X_train[:n], y_train[:n])
    fetched = np.take_along_axis(clf.key_usage_, codes_test.T, axis=1)  # usage of each hit
    landed.append(np.mean(fetched == 0))
    with_mask.append(clf.score(X_test, y_test))
    without_mask.append(clf.set_params(mask_unused_keys=False).score(X_test, y_test))
    print(f"n={n:5d}: test heads on never-used keys {landed[-1]:.1%}; accuracy "
          f"masked {with_mask[-1]:.3f}, not masked {without_mask[-1]:.3f}")

fig, (ax_left, ax_right) = plt.subplots(1, 2, figsize=(9, 3.6))
ax_left.plot(sizes, landed, marker="o", color="C2")
ax_left.set_ylabel("test heads on never-used keys")
ax_right.plot(sizes, with_mask, marker="o", label="mask_unused_keys=True")
ax_right.plot(sizes, without_mask, marker="s", label="mask_unused_keys=False")
ax_right.set_ylabel("test accuracy")
ax_right.legend(loc="lower right")
for ax in (ax_left, ax_right):
    ax.set_xscale("log")
    ax.set_xlabel("labelled training samples")
    ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %%
# Masking helps most when few samples have been seen and many test heads
# land on keys no one trained; once nearly every region of the data has been
# visited, the two agree.
#
# Keys fitted on the wrong data
# -----------------------------
#
# Keys should cover the distribution the encoder produces for the task. Keys
# fitted on unrelated data -- here Gaussian noise with the mean and standard
# deviation of each pixel of the training images -- leave more keys unused by
# the task's samples, so the task's data are spread over fewer keys, and
# accuracy drops a little.
noise = np.random.RandomState(0).standard_normal((5000, X_train.shape[1]))
noise = (X_train.mean(0) + X_train.std(0) * noise).astype(np.float32)
noise_codebook = KeyCodebook(n_codebooks=64, n_keys=512, key_dim=8, random_state=0).fit(noise)
for name, keys in [("digits", codebook), ("Gaussian noise", noise_codebook)]:
    clf = KeyValueBottleneckClassifier(codebook=FrozenEstimator(keys), random_state=0)
    clf.fit(X_train, y_train)
    print(f"keys fitted on {name:<15} used keys {np.mean(clf.key_usage_ > 0):.1%}, "
          f"test accuracy {clf.score(X_test, y_test):.3f}")
