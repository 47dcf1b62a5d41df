"""
=====================================================
Class-incremental digits: DKVB against its peers
=====================================================

scikit-learn's handwritten digits arrive in five *phases* of two classes each,
{0, 1} first and {8, 9} last. Every model sees each phase once, for a fixed
number of epochs, and never again; it is not told where a phase ends. After
every few epochs we measure its accuracy on the **full** test set, all ten
classes. A model that does not forget climbs one step per phase, to 20%, 40%,
... of the classes, and ends where the same model trained on shuffled
(i.i.d.) data ends.

The peers are the streaming classifiers of :mod:`skkvb.bench` (the same as in
the ``skkvb-bench`` command):

* three that keep exact running statistics, so that the order of the data
  does not matter: streaming LDA, nearest class mean and a RanPAC-style random
  ReLU features + ridge classifier;
* two trained by gradient descent, which forget: a linear probe trained by SGD
  and an MLP with one hidden layer of 128 units.
"""

# %%
# Data and phases
# ---------------
#
# Raw pixels, standardised, in a 70/30 stratified split (as in the README).
# :class:`~skkvb.streams.ClassIncrementalSplit` cuts the training set into
# phases; with ``class_order`` the classes arrive in label order.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from skkvb import KeyCodebook, KeyValueBottleneckClassifier
from skkvb.bench import (
    MLPProbe,
    NearestClassMean,
    RandomReLURidgeClassifier,
    SGDLinearProbe,
    StreamingLDA,
)
from skkvb.streams import ClassIncrementalSplit, make_phases

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.3, random_state=0, stratify=y
)
scaler = StandardScaler().fit(X_train)
X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
splitter = ClassIncrementalSplit(5, class_order=range(10), random_state=0)
phases = make_phases(X_train, y_train, splitter)
print([np.unique(y_phase).tolist() for _, y_phase in phases])

# %%
# The bottleneck's keys
# ---------------------
#
# The keys are fitted once, without labels, on the training images (the paper
# fits them on a different unlabelled dataset; see the user guide), then
# frozen. 64 codebooks of 128 keys of dimension 8 suit these 64 pixels.
codebook = KeyCodebook(n_codebooks=64, n_keys=128, key_dim=8, random_state=0).fit(X_train)

# %%
# The learners
# ------------
#
# Each entry says how to build a fresh model and whether it is a *single-pass*
# learner: a model with exact statistics gets one ``partial_fit`` per phase
# (more would count samples twice), the others get ``EPOCHS`` epochs per
# phase. Nobody is given the classes upfront: every label set grows as new
# classes arrive.
EPOCHS = 30  # per phase
EVAL_EVERY = 5  # epochs


def make_dkvb():
    return KeyValueBottleneckClassifier(
        codebook=FrozenEstimator(codebook), partial_fit_epochs=EVAL_EVERY, random_state=0
    )


learners = {
    "DKVB": (make_dkvb, False),
    "streaming LDA": (StreamingLDA, True),
    "nearest class mean": (NearestClassMean, True),
    "random ReLU ridge": (lambda: RandomReLURidgeClassifier(random_state=0), True),
    "SGD linear probe": (lambda: SGDLinearProbe(random_state=0), False),
    "MLP probe": (lambda: MLPProbe(random_state=0), False),
}

# %%
# The stream
# ----------
#
# A short loop does what the benchmark's runner does. The bottleneck runs
# ``partial_fit_epochs`` epochs per call on codes it computes once per call;
# a probe's ``partial_fit`` is one epoch.


def run_stream(make, single_pass):
    model = make()
    epochs, accuracy = [], []
    for phase, (X_phase, y_phase) in enumerate(phases):
        if single_pass:
            model.partial_fit(X_phase, y_phase)
            epochs.append(EPOCHS * (phase + 1))
            accuracy.append(model.score(X_test, y_test))
            continue
        calls_per_eval = 1 if hasattr(model, "partial_fit_epochs") else EVAL_EVERY
        for done in range(EVAL_EVERY, EPOCHS + 1, EVAL_EVERY):
            for _ in range(calls_per_eval):
                model.partial_fit(X_phase, y_phase)
            epochs.append(EPOCHS * phase + done)
            accuracy.append(model.score(X_test, y_test))
    return np.array(epochs), np.array(accuracy)


curves = {name: run_stream(make, single_pass) for name, (make, single_pass) in learners.items()}
for name, (_, accuracy) in curves.items():
    print(f"{name:<20} final accuracy on all 10 classes: {accuracy[-1]:.3f}")

# %%
# For reference, the bottleneck trained i.i.d.: ``EPOCHS`` epochs over the
# whole shuffled training set, so that every sample is seen as often as in the
# stream.
iid = make_dkvb().set_params(partial_fit_epochs=EPOCHS)
print(f"DKVB i.i.d.: {iid.partial_fit(X_train, y_train).score(X_test, y_test):.3f}")

# %%
# Learning curves
# ---------------
#
# Dotted lines mark the phase boundaries. Single-pass learners are evaluated
# at the end of each phase only (markers).
fig, ax = plt.subplots(figsize=(8, 4.5))
for name, (epochs, accuracy) in curves.items():
    single_pass = learners[name][1]
    if single_pass:
        ax.plot(epochs, accuracy, marker="o", linestyle="none", label=name)
    else:
        ax.plot(np.r_[0, epochs], np.r_[0, accuracy], label=name)
for boundary in range(EPOCHS, EPOCHS * len(phases), EPOCHS):
    ax.axvline(boundary, color="0.6", linestyle=":", linewidth=1)
ax.set_xlabel("epochs (30 per phase)")
ax.set_ylabel("test accuracy, all 10 classes")
ax.set_ylim(0, 1.02)
ax.set_xlim(0, EPOCHS * len(phases))
ax.legend(loc="upper left", fontsize="small")
ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %%
# Reading the curves
# ------------------
#
# * The gradient-descent probes jump when a phase brings new classes, then
#   decay during the phase while the new classes overwrite the old ones. They
#   end far below their i.i.d. accuracy (``skkvb-bench`` measures both).
# * The bottleneck climbs one step per phase and never drops: a phase only
#   moves the values of the keys its samples fetch. It ends close to its
#   i.i.d. accuracy.
# * The exact-statistics peers are order-independent by construction, so they
#   too end where they would have ended on shuffled data. On raw digit pixels
#   streaming LDA and the random-feature ridge classifier are hard to beat.
#   What they keep grows with the square of a dimension (LDA a covariance of
#   the features, the ridge classifier a Gram matrix of its 2,000 random
#   features); the bottleneck keeps ``n_codebooks * n_keys * n_classes``
#   values and a training step touches only ``n_codebooks`` rows per sample.
#   Which one wins depends on the data and the encoder: the ``skkvb-bench``
#   command compares them (see the user guide).
