"""Parametric decoder: accuracy and forgetting of the mean and of a learned linear decoder.

The paper's ablation (Träuble et al., 2023): replace the mean over codebooks
of the fetched values by a learned decoder, and class-incremental training
forgets. Here every model reads the same keys -- one codebook per seed,
fitted without labels on all training inputs and shared through
``FrozenEstimator`` -- so only the values and the decoder differ:

* ``count, mean``: the default (counting values): one pass, order-independent;
* ``sgd, mean``: the paper's model, SGD values decoded by their mean;
* ``sgd, linear``: ``decoder="linear"``, values and a linear decoder trained
  together by SGD, at each ``decoder_learning_rate`` of ``--decoder-rates``
  (``auto`` is ``learning_rate / n_codebooks**2``).

Each model is fed ``--phases`` phases by ``partial_fit`` (label set growing,
``partial_fit_max_iter`` epochs per phase, for each of ``--epochs``), once
class-incrementally (``ClassIncrementalSplit``: 5 phases of 2 classes) and
once i.i.d. (``IIDSplit``, the same number of phases). Printed, as means over
``--seeds``: the final accuracy on the whole test set of each stream, their
difference, and the class-incremental stream's average forgetting
(:func:`skkvb.metrics.forgetting`, on the test samples of each phase's
classes).

Datasets: ``digits`` (sklearn's raw pixels / 16, 70/30 split, as
skkvb-bench), ``mnist`` and ``fashion-mnist`` through ``--encoder
efficientnet-lite0`` with ``--max-train 4000 --max-test 2000``, from
skkvb-bench's embedding cache (the embeddings ``benchmarks/cold_start.py``
uses). Run::

    python benchmarks/decoder.py --dataset digits
    python benchmarks/decoder.py --dataset mnist --encoder efficientnet-lite0 \\
        --max-train 4000 --max-test 2000
    python benchmarks/decoder.py --dataset fashion-mnist --encoder efficientnet-lite0 \\
        --max-train 4000 --max-test 2000

The table is printed and written to ``benchmarks/results/decoder_<dataset>.txt``.
"""

from pathlib import Path

import numpy as np
from _common import (
    Table,
    add_data_arguments,
    comma_list,
    embedded_data,
    load_average,
    make_parser,
    parse_shape,
)
from sklearn.frozen import FrozenEstimator

from skkvb import KeyCodebook, KeyValueBottleneckClassifier
from skkvb.metrics import forgetting
from skkvb.streams import ClassIncrementalSplit, IIDSplit, make_phases

RESULTS = Path(__file__).parent / "results"


def rate(text):
    """A ``--decoder-rates`` entry: ``auto`` or a positive float."""
    return text if text == "auto" else float(text)


def parse_args():
    parser = make_parser(__doc__)
    add_data_arguments(parser)
    parser.add_argument("--phases", type=int, default=5)
    parser.add_argument("--seeds", type=comma_list(int), default=[0, 1, 2])
    parser.add_argument("--epochs", type=comma_list(int), default=[1, 10, 100],
                        help="SGD epochs per phase (partial_fit_max_iter), e.g. 1,10,100")
    parser.add_argument("--decoder-rates", type=comma_list(rate), default=["auto", 0.125],
                        help="decoder_learning_rate of the linear decoder, e.g. auto,0.125")
    parser.add_argument("--shape", type=parse_shape, default=(64, 256, 8),
                        help="codebooks x keys x key dimension (default 64x256x8)")
    return parser.parse_args()


def models(args):
    """(name, decoder learning rate or "", epochs or "", parameters) of every model."""
    yield "count, mean", "", "", {"value_update": "count"}
    for epochs in args.epochs:
        yield "sgd, mean", "", epochs, {"value_update": "sgd", "partial_fit_max_iter": epochs}
        for decoder_rate in args.decoder_rates:
            yield "sgd, linear", decoder_rate, epochs, {
                "value_update": "sgd", "decoder": "linear", "partial_fit_max_iter": epochs,
                "decoder_learning_rate": decoder_rate,
            }


def streamed(codebook, parameters, seed, phases, X_test, test_groups):
    """The accuracy matrix of a stream (rows: after each phase; columns: the
    test samples of each group of classes) and its final test accuracy."""
    clf = KeyValueBottleneckClassifier(
        codebook=FrozenEstimator(codebook), device="cpu", random_state=seed, **parameters
    )
    R = np.empty((len(phases), len(test_groups)))
    for i, (X, y) in enumerate(phases):
        clf.partial_fit(X, y)
        correct = clf.predict(X_test[0]) == X_test[1]
        R[i] = [correct[group].mean() for group in test_groups]
    return R, correct.mean()


def main():
    args = parse_args()
    Z_train, y_train, Z_test, y_test = embedded_data(args)
    n_codebooks, n_keys, key_dim = args.shape
    header = (f"{args.dataset} through {args.encoder}: {len(Z_train)} train, {len(Z_test)} "
              f"test; codebook {n_codebooks} x {n_keys} x {key_dim} fitted on all training "
              f"inputs; {args.phases} phases; seeds {','.join(map(str, args.seeds))}; "
              f"decoder rate auto = 1/{n_codebooks}; load {load_average()}")
    print(header, flush=True)
    specs = list(models(args))
    results = {i: [] for i in range(len(specs))}  # (iid, class-incremental, forgetting)
    for seed in args.seeds:
        codebook = KeyCodebook(n_codebooks=n_codebooks, n_keys=n_keys, key_dim=key_dim,
                               device="cpu", random_state=seed).fit(Z_train)
        splitter = ClassIncrementalSplit(args.phases, random_state=seed)
        test_groups = [np.isin(y_test, group) for group in splitter.phase_classes(y_train)]
        incremental = make_phases(Z_train, y_train, splitter)
        iid = make_phases(Z_train, y_train, IIDSplit(args.phases, random_state=seed))
        for i, (name, decoder_rate, epochs, parameters) in enumerate(specs):
            _, iid_accuracy = streamed(codebook, parameters, seed, iid, (Z_test, y_test),
                                       test_groups)
            R, incremental_accuracy = streamed(codebook, parameters, seed, incremental,
                                               (Z_test, y_test), test_groups)
            results[i].append((iid_accuracy, incremental_accuracy, forgetting(R)))
            print(f"  seed {seed} {name} {decoder_rate} {epochs}: iid {iid_accuracy:.3f}, "
                  f"class-incremental {incremental_accuracy:.3f}", flush=True)
    table = Table([("values, decoder", 16, ""), ("rate", 7, ""), ("epochs", 7, ""),
                   ("iid", 8, ".3f"), ("class-inc", 10, ".3f"), ("iid - ci", 9, ".3f"),
                   ("forgetting", 11, ".3f")])
    lines = [header, "final test accuracy, mean over seeds; forgetting of the class-incremental "
             "stream", table.header()]
    for i, (name, decoder_rate, epochs, _) in enumerate(specs):
        iid_accuracy, incremental_accuracy, forgot = np.mean(results[i], axis=0)
        lines.append(table.row(name, str(decoder_rate), str(epochs), iid_accuracy,
                               incremental_accuracy, iid_accuracy - incremental_accuracy, forgot))
    lines.append(f"load at the end: {load_average()}")
    print("\n".join(lines[1:]))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"decoder_{args.dataset}.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
