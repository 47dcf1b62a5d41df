"""Calibrated probabilities: DKVB at T = 1 and at its fitted temperature, against peers.

Every model is fitted on the training set and scored on the test set:
accuracy, expected calibration error (ECE: 15 equal-width bins of the largest
probability), log-loss and Brier score (the sum over classes of the squared
error, mean over samples). Models:

* ``DKVB count`` and ``DKVB sgd`` (``value_update``; ``--value-update
  count,count-residual`` picks others), each at ``T=1``
  (``temperature=1.0``: the softmax of the mean of log-values) and ``auto``
  (the default, ``temperature="auto"``; the fitted T is printed). Both rules
  read one codebook (``--shape``, default KeyCodebook's 64 x 4096 x 32) fitted
  on the training inputs without labels, as ``fit`` does, shared through
  ``FrozenEstimator``; the temperature only rescales the logits, so each rule's
  rows come from one fitted model and have the same accuracy. A third row,
  ``oracle T``, uses the temperature that minimises the *test* log-loss: not a
  method, the floor of what any single temperature can reach.
* ``LogisticRegression`` (multinomial, C=1, on the same inputs), and the same
  after ``StandardScaler``: ``predict_proba``.
* ``SLDA``: :class:`skkvb.bench.StreamingLDA`, whose ``predict_proba`` is the
  softmax of its linear discriminants (class posteriors under equal priors and
  a shared covariance).
* ``RanPAC ridge``: :class:`skkvb.bench.RandomReLURidgeClassifier`, which has
  no ``predict_proba``: its scores are a ridge regression onto one-hot labels.
  Two readings are given: the softmax of the scores, and the scores clipped
  at zero and normalised to sum to one (uniform where all are <= 0).

Datasets: ``digits`` (sklearn's raw pixels / 16, 70/30 split, as skkvb-bench),
``mnist`` and ``fashion-mnist`` through ``--encoder efficientnet-lite0`` with
``--max-train 4000 --max-test 2000``, read from skkvb-bench's embedding cache
(the embeddings ``benchmarks/cold_start.py`` uses). Run::

    python benchmarks/calibration.py --dataset digits
    python benchmarks/calibration.py --dataset mnist --encoder efficientnet-lite0 \\
        --max-train 4000 --max-test 2000
    python benchmarks/calibration.py --dataset fashion-mnist --encoder efficientnet-lite0 \\
        --max-train 4000 --max-test 2000

The table is printed and written to ``benchmarks/results/calibration_<dataset>.txt``.
"""

import time
from pathlib import Path

import numpy as np
from _common import (
    Table,
    add_data_arguments,
    embedded_data,
    load_average,
    make_parser,
    parse_shape,
)
from scipy.special import softmax
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, log_loss
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skkvb import KeyCodebook, KeyValueBottleneckClassifier
from skkvb._calibration import fit_temperature
from skkvb.bench import RandomReLURidgeClassifier, StreamingLDA
from skkvb.metrics import expected_calibration_error

RESULTS = Path(__file__).parent / "results"


def parse_args():
    parser = make_parser(__doc__)
    add_data_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--shape", type=parse_shape, default=None,
        help="codebooks x keys x key dimension, e.g. 64x256x8 (default: KeyCodebook's)",
    )
    parser.add_argument(
        "--value-update", default="count,sgd",
        help="comma-separated value rules of the DKVB rows (default: count,sgd); another "
        "list writes calibration_<dataset>_<rules>.txt",
    )
    return parser.parse_args()


def scores(y_test, proba, classes):
    """Accuracy, ECE, log-loss and Brier score of probabilities over ``classes``."""
    return (
        float(np.mean(classes[proba.argmax(1)] == y_test)),
        expected_calibration_error(y_test, proba, labels=classes),
        log_loss(y_test, proba, labels=classes),
        brier_score_loss(y_test, proba, labels=classes),
    )


def bottleneck_rows(args, Z_train, y_train, Z_test, y_test):
    """(name, seconds, T, probabilities) of both value rules at T = 1 and auto."""
    shape = {}
    if args.shape is not None:
        shape = dict(zip(("n_codebooks", "n_keys", "key_dim"), args.shape))
    tic = time.perf_counter()
    codebook = KeyCodebook(device="cpu", random_state=args.seed, **shape).fit(Z_train)
    key_seconds = time.perf_counter() - tic
    print(f"codebook {codebook.keys_.shape[0]} x {codebook.keys_.shape[1]} x "
          f"{codebook.keys_.shape[2]} fitted in {key_seconds:.1f} s", flush=True)
    rows = []
    for rule in args.value_update.split(","):
        clf = KeyValueBottleneckClassifier(
            codebook=FrozenEstimator(codebook), value_update=rule, device="cpu",
            random_state=args.seed,
        )
        tic = time.perf_counter()
        clf.fit(Z_train, y_train)
        fit_seconds = time.perf_counter() - tic
        tic = time.perf_counter()
        temperature = clf.temperature_  # fitted here, on first use
        t_seconds = time.perf_counter() - tic
        auto = clf.predict_proba(Z_test)
        one = clf.set_params(temperature=1.0).predict_proba(Z_test)
        logits = clf.decision_function(Z_test)
        oracle = fit_temperature(logits, np.searchsorted(clf.classes_, y_test))
        best = clf.set_params(temperature=oracle).predict_proba(Z_test)
        rows.append((f"DKVB {rule}, T=1", fit_seconds, 1.0, one, clf.classes_))
        rows.append((f"DKVB {rule}, auto", fit_seconds + t_seconds, temperature, auto,
                     clf.classes_))
        rows.append((f"DKVB {rule}, oracle T", None, oracle, best, clf.classes_))
    return rows


def peer_rows(args, Z_train, y_train, Z_test):
    rows = []
    peers = [
        ("LogisticRegression", LogisticRegression(max_iter=5000)),
        ("Scaler + LogisticRegression",
         make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))),
        ("SLDA", StreamingLDA()),
    ]
    for name, model in peers:
        tic = time.perf_counter()
        model.fit(Z_train, y_train)
        seconds = time.perf_counter() - tic
        rows.append((name, seconds, None, model.predict_proba(Z_test), model.classes_))
    tic = time.perf_counter()
    ridge = RandomReLURidgeClassifier(random_state=args.seed).fit(Z_train, y_train)
    seconds = time.perf_counter() - tic
    raw = ridge.decision_function(Z_test)
    clipped = np.maximum(raw, 0.0)
    total = clipped.sum(1, keepdims=True)
    clipped = np.where(total > 0, clipped / np.where(total > 0, total, 1.0), 1.0 / raw.shape[1])
    rows.append(("RanPAC ridge, softmax", seconds, None, softmax(raw, axis=1), ridge.classes_))
    rows.append(("RanPAC ridge, clipped", seconds, None, clipped, ridge.classes_))
    return rows


def main():
    args = parse_args()
    Z_train, y_train, Z_test, y_test = embedded_data(args)
    lines = [
        f"{args.dataset} through {args.encoder}: {len(Z_train)} train, {len(Z_test)} test, "
        f"{Z_train.shape[1]} features; seed {args.seed}; load {load_average()}"
    ]
    print(lines[0], flush=True)
    rows = bottleneck_rows(args, Z_train, y_train, Z_test, y_test)
    rows += peer_rows(args, Z_train, y_train, Z_test)
    table = Table([("model", 28, ""), ("accuracy", 9, ".3f"), ("ECE", 7, ".3f"),
                   ("log-loss", 9, ".3f"), ("Brier", 7, ".3f"), ("T", 8, ".4f"),
                   ("fit s", 7, ".1f")], missing="-")
    lines.append(table.header())
    for name, seconds, temperature, proba, classes in rows:
        lines.append(table.row(name, *scores(y_test, proba, classes), temperature, seconds))
    lines.append(f"load at the end: {load_average()}")
    print("\n".join(lines[1:]))
    RESULTS.mkdir(exist_ok=True)
    suffix = "" if args.value_update == "count,sgd" else "_" + args.value_update.replace(",", "_")
    (RESULTS / f"calibration_{args.dataset}{suffix}.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
