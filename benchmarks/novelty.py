"""Novelty scores: AUROC of telling unseen classes, and another dataset, from trained ones.

*Unseen classes*: a classifier is trained on the first half of the sorted
labels and scores the whole test set; the AUROC is that of ranking the test
samples of the other half (the positives) below those of the trained half
with each score (higher = more typical). Three codebooks, fitted without
labels (``--shape``, default 64 x 1024 x 16), each frozen before training:

* ``keys all``: on every training input, unseen classes included -- a broad
  unlabelled set that covers what the stream has not labelled yet;
* ``keys half``: on the trained half's inputs only -- what ``fit`` does with
  an unfitted codebook;
* ``keys other``: on the training inputs of ``--other-dataset`` (the protocol
  of the prototype quoted in the design notes: keys from other data).

*Dataset shift* (``shift``): trained on every class (``keys all``); the
positives are the test set of ``--other-dataset``, the negatives this
dataset's test set, both through the same encoder.

Scores. The bottleneck's: ``score_samples`` of the classifier (the default:
cell log-probability with ``a = count_smoothing = 0.1``, minus the distance to
the key relative to the training mean); its two terms alone (``cell term``,
``distance term``); ``KeyCodebook.score_samples`` (distance to the nearest
keys, no training counts); the cell term minus ``beta`` times the relative
distance for other ``beta``; and the prototype's ``log(1 + count)`` with and
without its residual term (distance to the trained samples' mean residual in
the fetched cell, relative to its training mean). Baselines: distance to the
nearest training embedding (L2), Mahalanobis distance to the nearest class
mean (shared Ledoit-Wolf covariance), the classifier's maximum softmax
probability (``temperature="auto"``).

Run::

    python benchmarks/novelty.py --dataset digits --shape 64x256x8 --other-dataset none
    python benchmarks/novelty.py --dataset mnist --other-dataset fashion-mnist \\
        --encoder efficientnet-lite0 --max-train 4000 --max-test 2000
    python benchmarks/novelty.py --dataset fashion-mnist --other-dataset mnist \\
        --encoder efficientnet-lite0 --max-train 4000 --max-test 2000

The table is printed and written to ``benchmarks/results/novelty_<dataset>.txt``.
"""

import time
from pathlib import Path

import numpy as np
import torch
from _common import (
    Table,
    add_data_arguments,
    embedded_data,
    load_average,
    make_parser,
    parse_shape,
)
from sklearn.covariance import LedoitWolf
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from skkvb import KeyCodebook, KeyValueBottleneckClassifier
from skkvb.engine.heads import project

RESULTS = Path(__file__).resolve().parent / "results"
SMOOTHING = 0.1  # the classifier's default count_smoothing
BETAS = (0.5, 2.0)


def parse_args():
    parser = make_parser(__doc__)
    add_data_arguments(parser)
    parser.add_argument("--other-dataset", default="none", help="or 'none'")
    parser.add_argument("--shape", type=parse_shape, default=(64, 1024, 16))
    parser.add_argument("--seed", type=int, default=0, help="random_state of the keys")
    return parser.parse_args()


def fitted_keys(X, args):
    n_codebooks, n_keys, key_dim = args.shape
    codebook = KeyCodebook(n_codebooks=n_codebooks, n_keys=n_keys, key_dim=key_dim,
                           device="cpu", random_state=args.seed)
    return FrozenEstimator(codebook.fit(X))


# ------------------------------------------------------------------ scores


def residuals(codebook, X):
    """Codes (N, C) and residuals head - key (N, C, d_k) of X, float64 numpy."""
    codes = codebook.transform(X)
    keys = codebook.keys_.astype(np.float64)
    projection = torch.as_tensor(codebook.projection_, dtype=torch.float64)
    heads = project(torch.as_tensor(X, dtype=torch.float64), projection, keys.shape[0]).numpy()
    return codes, heads - keys[np.arange(keys.shape[0]), codes]


def bottleneck_scores(clf, X_train, X):
    """The bottleneck's scores of X (higher = more typical), by name."""
    codebook = clf.codebook_
    n_codebooks, n_keys = clf.key_usage_.shape
    codes_train, r_train = residuals(codebook, X_train)
    codes, r = residuals(codebook, X)
    index = np.arange(n_codebooks)
    counts = clf.key_usage_[index, codes].astype(np.float64)
    n = clf.key_usage_[0].sum()
    cell = np.log((counts + SMOOTHING) / (n + SMOOTHING * n_keys))
    distance = (r**2).sum(-1) / (r_train**2).sum(-1).mean(0)
    # The prototype's residual term: distance to the cell's mean training residual.
    sums = np.zeros(clf.key_usage_.shape + (r.shape[-1],))
    np.add.at(sums, (np.broadcast_to(index, codes_train.shape), codes_train), r_train)
    means = sums / (clf.key_usage_[..., None] + 1.0)
    deviation_train = ((r_train - means[index, codes_train]) ** 2).sum(-1).mean(0)
    deviation = ((r - means[index, codes]) ** 2).sum(-1) / deviation_train
    scores = {
        "score_samples (default)": clf.score_samples(X),
        "cell term alone": cell.mean(1),
        "distance term alone": -distance.mean(1),
        "KeyCodebook.score_samples": codebook.score_samples(X),
    }
    np.testing.assert_allclose(scores["score_samples (default)"], (cell - distance).mean(1),
                               rtol=1e-4, atol=1e-4)  # the script reads the method right
    for beta in BETAS:
        scores[f"cell - {beta:g} x distance"] = (cell - beta * distance).mean(1)
    scores["log(1 + count) (prototype)"] = np.log1p(counts).mean(1)
    scores["log(1 + count) - residual"] = (np.log1p(counts) - deviation).mean(1)
    return scores


def baseline_scores(clf, X_train, y_train, X):
    nearest = NearestNeighbors(n_neighbors=1).fit(X_train).kneighbors(X)[0][:, 0]
    labels = np.unique(y_train)
    means = np.stack([X_train[y_train == label].mean(0) for label in labels])
    centred = X_train - means[np.searchsorted(labels, y_train)]
    precision = LedoitWolf().fit(centred).precision_
    mahalanobis = np.stack(
        [np.einsum("ij,jk,ik->i", X - mean, precision, X - mean) for mean in means], axis=1
    ).min(1)
    return {
        "nearest training embedding": -nearest,
        "Mahalanobis (class means)": -mahalanobis,
        "max softmax probability": clf.predict_proba(X).max(1),
    }


def aurocs(clf, X_train, y_train, X, novel):
    """AUROC of ranking the ``novel`` rows of X lowest, per score."""
    scores = {**bottleneck_scores(clf, X_train, X), **baseline_scores(clf, X_train, y_train, X)}
    return {name: roc_auc_score(novel, -score) for name, score in scores.items()}


# -------------------------------------------------------------------- runs


def unseen_classes(keys, Z_train, y_train, Z_test, y_test):
    trained = np.unique(y_train)[: len(np.unique(y_train)) // 2]
    seen = np.isin(y_train, trained)
    clf = KeyValueBottleneckClassifier(codebook=keys, device="cpu", random_state=0)
    clf.fit(Z_train[seen], y_train[seen])
    return aurocs(clf, Z_train[seen], y_train[seen], Z_test, ~np.isin(y_test, trained))


def dataset_shift(keys, Z_train, y_train, Z_test, Z_other):
    clf = KeyValueBottleneckClassifier(codebook=keys, device="cpu", random_state=0)
    clf.fit(Z_train, y_train)
    X = np.vstack([Z_test, Z_other])
    novel = np.r_[np.zeros(len(Z_test), bool), np.ones(len(Z_other), bool)]
    return aurocs(clf, Z_train, y_train, X, novel)


def main():
    args = parse_args()
    tic = time.perf_counter()
    Z_train, y_train, Z_test, y_test = embedded_data(args)
    trained = np.unique(y_train)[: len(np.unique(y_train)) // 2]
    columns = {}
    keys_all = fitted_keys(Z_train, args)
    columns["keys all"] = unseen_classes(keys_all, Z_train, y_train, Z_test, y_test)
    keys_half = fitted_keys(Z_train[np.isin(y_train, trained)], args)
    columns["keys half"] = unseen_classes(keys_half, Z_train, y_train, Z_test, y_test)
    if args.other_dataset != "none":
        Z_other_train, _, Z_other_test, _ = embedded_data(args, args.other_dataset)
        keys_other = fitted_keys(Z_other_train, args)
        columns["keys other"] = unseen_classes(keys_other, Z_train, y_train, Z_test, y_test)
        columns["shift"] = dataset_shift(keys_all, Z_train, y_train, Z_test, Z_other_test)
    lines = [
        f"{args.dataset} through {args.encoder}: {len(Z_train)} train, {len(Z_test)} test; "
        f"keys {'x'.join(map(str, args.shape))} (random_state={args.seed}); "
        f"trained classes {trained.tolist()}; other dataset: {args.other_dataset}",
        "AUROC of ranking novel samples lowest (unseen classes; shift: the other test set)",
    ]
    table = Table([("score", 30, "")] + [(name, 11, ".3f") for name in columns])
    lines.append(table.header())
    for name in next(iter(columns.values())):
        lines.append(table.row(name, *(column[name] for column in columns.values())))
    lines.append(f"{time.perf_counter() - tic:.0f} s; load average {load_average()}")
    print("\n".join(lines))
    (RESULTS / f"novelty_{args.dataset}.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
