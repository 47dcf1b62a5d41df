"""
==========================================================
Forgetting on the paper's 2-D toy, and why DKVB does not
==========================================================

This example reproduces the toy experiment of the Discrete Key-Value
Bottleneck paper (Träuble et al., ICML 2023, Section 5.1 and Figure 2).
Eight Gaussian classes in the plane arrive in four *stages* of two classes
each. Every model is trained on one stage after the other, with no replay of
earlier stages and without being told where a stage ends. After each stage we
draw its decision regions.

A linear probe and a small MLP are trained end to end by gradient descent:
whatever they learn on a stage overwrites what they learned on the stages
before. The key-value bottleneck only ever updates the values of the keys that
the current samples fetch, and those keys lie where the current samples are:
the rest of the plane keeps what it learned.
"""

# %%
# The data
# --------
#
# :func:`skkvb.streams.make_gaussian_toy` draws the toy: class ``k`` is a small
# Gaussian at angle ``2 pi k / 8`` on a circle in the unit square, 100 points
# per class. :class:`~skkvb.streams.ClassIncrementalSplit` with the classes in
# label order cuts it into the four stages {0, 1}, {2, 3}, {4, 5}, {6, 7}. A
# second draw is the test set.
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from sklearn.frozen import FrozenEstimator

from skkvb import KeyCodebook, KeyValueBottleneckClassifier
from skkvb.bench import MLPProbe, SGDLinearProbe
from skkvb.streams import ClassIncrementalSplit, make_gaussian_toy, make_phases

X_train, y_train = make_gaussian_toy(random_state=0)
X_test, y_test = make_gaussian_toy(random_state=1)
splitter = ClassIncrementalSplit(4, class_order=range(8), random_state=0)
stages = make_phases(X_train, y_train, splitter)
classes = np.arange(8)
print([np.unique(y_stage).tolist() for _, y_stage in stages])

# %%
# Keys fitted on unlabelled points
# --------------------------------
#
# The keys of a bottleneck are fitted once, without labels, and then frozen.
# The paper spreads its keys uniformly over the input domain; here we fit them
# on 4,000 unlabelled points drawn uniformly in the unit square, which gives
# the same picture. Two bottlenecks, as in the paper:
#
# * one codebook of 400 two-dimensional keys on the raw input
#   (``projection="none"``);
# * 20 codebooks of 20 keys each, every codebook reading its own fixed random
#   projection of the input to two dimensions (``key_dim=2``).
#
# :class:`~sklearn.frozen.FrozenEstimator` tells the classifier that these keys
# are fitted already and must not be refitted.
unlabelled = np.random.RandomState(0).uniform(0, 1, size=(4000, 2)).astype(np.float32)
one_codebook = KeyCodebook(projection="none", n_keys=400, random_state=0).fit(unlabelled)
many_codebooks = KeyCodebook(n_codebooks=20, n_keys=20, key_dim=2, random_state=0).fit(unlabelled)

# %%
# The models
# ----------
#
# The probes take 1,000 gradient steps per stage, as in the paper:
#
# * a linear probe trained by plain SGD (one step per sample, so five epochs
#   of the 200 points of a stage);
# * an MLP with one hidden layer of 32 units, trained with Adam at learning
#   rate 1e-3 (one minibatch step per epoch of a stage).
#
# The two bottlenecks use ``skkvb``'s default counting values
# (``value_update="count"``): one pass over a stage adds, for every key, the
# classes of the samples that fetched it. The paper trains the values by SGD
# instead; we do that at the end, with the same outcome.
#
# All four are given the eight classes upfront, as in the paper. The two
# probes come from :mod:`skkvb.bench`, where the benchmark keeps its peers.
STEPS_PER_STAGE = 1000


def bottleneck(codebook, **params):
    return KeyValueBottleneckClassifier(
        codebook=FrozenEstimator(codebook), random_state=0, **params
    )


models = {
    "linear probe": (SGDLinearProbe(random_state=0), STEPS_PER_STAGE // 200),
    "MLP (32 hidden)": (MLPProbe(hidden_layer_sizes=(32,), random_state=0), STEPS_PER_STAGE),
    "DKVB, 1 x 400 keys": (bottleneck(one_codebook), 1),
    "DKVB, 20 x 20 keys": (bottleneck(many_codebooks), 1),
}

# %%
# Training stage after stage
# --------------------------
#
# ``partial_fit`` is called on each stage's data only. A probe's
# ``partial_fit`` runs one epoch, so it is called once per epoch; a counting
# bottleneck needs one call per stage. After every stage we keep the
# predictions on a grid over the unit square and the accuracy on the test
# points of every class seen so far.
grid_x, grid_y = np.meshgrid(np.linspace(0, 1, 150), np.linspace(0, 1, 150))
grid = np.column_stack([grid_x.ravel(), grid_y.ravel()]).astype(np.float32)

regions = {name: [] for name in models}
accuracy = {name: [] for name in models}
for stage, (X_stage, y_stage) in enumerate(stages):
    seen = y_test < 2 * (stage + 1)
    for name, (model, calls) in models.items():
        for _ in range(calls):
            model.partial_fit(X_stage, y_stage, classes=classes)
        regions[name].append(model.predict(grid).reshape(grid_x.shape))
        accuracy[name].append(model.score(X_test[seen], y_test[seen]))

print("accuracy on the classes seen so far, after each stage")
for name, scores in accuracy.items():
    print(f"{name:<20}" + "".join(f"{score:8.2f}" for score in scores))

# %%
# The probes end every stage knowing only its two classes: their accuracy on
# the classes seen so far falls to 2 / (number of classes seen). Both
# bottlenecks keep every class.
#
# Decision regions
# ----------------
#
# One row per model, one column per stage. Filled colours are the predicted
# class; the points are the training data of the stages seen so far, the
# current stage's in black outline.
colours = plt.get_cmap("tab10").colors[:8]
cmap = ListedColormap(colours)
fig, axes = plt.subplots(len(models), len(stages), figsize=(9, 9.4), sharex=True, sharey=True)
for row, name in enumerate(models):
    for stage in range(len(stages)):
        ax = axes[row, stage]
        ax.pcolormesh(grid_x, grid_y, regions[name][stage], cmap=cmap, vmin=-0.5,
                      vmax=7.5, alpha=0.35, shading="auto")
        for past in range(stage + 1):
            X_past, y_past = stages[past]
            ax.scatter(X_past[:, 0], X_past[:, 1], c=y_past, cmap=cmap, vmin=-0.5, vmax=7.5,
                       s=6, edgecolors="k" if past == stage else "none", linewidths=0.3)
        ax.set_xticks([])
        ax.set_yticks([])
        if row == 0:
            ax.set_title(f"after stage {stage + 1}")
        if stage == 0:
            ax.set_ylabel(name)
fig.tight_layout()
plt.show()

# %%
# The linear probe and the MLP paint the whole plane with the two classes of
# the last stage. The bottlenecks' regions of old classes survive: a sample of
# stage 4 fetches keys near classes 6 and 7 and only changes their values. With
# one codebook, regions far from all data stay at the class of whichever
# trained key is nearest (``mask_unused_keys=True``). With 20 codebooks each
# prediction averages 20 partitions of the plane, one per random projection:
# the boundaries differ, and both keep every class.

# %%
# The paper's values: SGD
# -----------------------
#
# With ``value_update="sgd"`` the values are trained as in the paper, by plain
# SGD on the cross-entropy, here one full-batch step per epoch and 1,000
# epochs per stage in one ``partial_fit`` call (the codes of a stage are
# computed once). The steps of a stage move only the values of the keys its
# samples fetch, so these bottlenecks keep every class too.
print("bottlenecks with SGD values, accuracy on the classes seen so far")
for name, codebook in [("1 x 400 keys", one_codebook), ("20 x 20 keys", many_codebooks)]:
    model = bottleneck(codebook, value_update="sgd", partial_fit_max_iter=STEPS_PER_STAGE)
    scores = []
    for stage, (X_stage, y_stage) in enumerate(stages):
        model.partial_fit(X_stage, y_stage, classes=classes)
        seen = y_test < 2 * (stage + 1)
        scores.append(model.score(X_test[seen], y_test[seen]))
    print(f"{'DKVB, ' + name:<20}" + "".join(f"{score:8.2f}" for score in scores))
