"""
=====================================================
Regression on a stream sorted by target
=====================================================

The :class:`~skkvb.KeyValueBottleneckRegressor` keeps, for every key, the
summed weight, target and squared target of the samples that fetched it, and
predicts by pooling the target means of the keys a sample fetches. Learning is
adding: a stream of batches ends where one call on all the data ends, in any
order.

Here the stream is as unfriendly as a regression stream gets: scikit-learn's
handwritten digits, the digit read as a *number* (0 to 9), arrive in five
phases sorted by that number -- the regression analogue of a class-incremental
stream. We score the full test set after every phase, against an
:class:`~sklearn.linear_model.SGDRegressor` fed the same stream.
"""

# %%
# Data and phases
# ---------------
#
# Raw pixels divided by 16 (a constant, not a statistic of the stream), a
# 70/30 split; the training set is sorted by target and cut into five phases.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import SGDRegressor
from sklearn.model_selection import train_test_split

from skkvb import KeyCodebook, KeyValueBottleneckRegressor

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X / 16.0, y.astype(float), test_size=0.3, random_state=0, stratify=y
)
phases = np.array_split(np.argsort(y_train, kind="stable"), 5)
print([np.unique(y_train[phase]).tolist() for phase in phases])

# %%
# Keys and models
# ---------------
#
# The keys are fitted once on the training images, without targets, then
# frozen (``FrozenEstimator``). The SGD regressor gets five passes over each
# phase; the bottleneck one (more would count samples twice).
codebook = FrozenEstimator(
    KeyCodebook(n_codebooks=64, n_keys=256, key_dim=8, random_state=0).fit(X_train)
)


def stream(model, passes):
    """Scores on the full test set after each phase."""
    scores = []
    for phase in phases:
        for _ in range(passes):
            model.partial_fit(X_train[phase], y_train[phase])
        scores.append(model.score(X_test, y_test))
    return scores


bottleneck = KeyValueBottleneckRegressor(codebook=codebook)
curves = {
    "bottleneck": stream(bottleneck, passes=1),
    "SGDRegressor": stream(SGDRegressor(random_state=0), passes=5),
}
iid = KeyValueBottleneckRegressor(codebook=codebook).fit(X_train, y_train)
for name, scores in curves.items():
    print(f"{name:<13} R^2 after each phase: {np.round(scores, 3).tolist()}")
print(f"bottleneck trained i.i.d.: R^2 {iid.score(X_test, y_test):.3f}")
print("stream == i.i.d.:", np.allclose(bottleneck.predict(X_test), iid.predict(X_test)))

# %%
# Scores along the stream
# -----------------------
#
# R^2 on the whole test set, all ten digits, after each phase. Early phases
# cover a few digits only, so both models start low.
fig, ax = plt.subplots(figsize=(7, 4))
for name, scores in curves.items():
    ax.plot(range(1, 6), scores, marker="o", label=name)
ax.axhline(iid.score(X_test, y_test), color="0.5", linestyle=":",
           label="bottleneck, i.i.d.")
ax.set_xlabel("phase (targets sorted, lowest first)")
ax.set_ylabel("test R^2, all digits")
ax.set_xticks(range(1, 6))
ax.set_ylim(-2, 1)
ax.legend(loc="lower right")
ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %%
# Reading the curves
# ------------------
#
# * The bottleneck climbs phase by phase and ends exactly where the same model
#   trained on shuffled data ends: a phase only adds to the statistics of the
#   keys its samples fetch, and sums do not depend on their order.
# * SGDRegressor follows the latest phase: sorted by target, each phase pulls
#   its intercept and weights towards the latest targets, and the old ones are
#   forgotten. Trained on shuffled data, a linear model of the pixels is not a
#   good model of this target either (on this split ``Ridge(alpha=1.0)``
#   reaches an R^2 of 0.56).
# * ``benchmarks/regression.py`` runs the same comparison with more peers
#   (k-nearest neighbours, ridge on random features) and on MNIST embeddings.
