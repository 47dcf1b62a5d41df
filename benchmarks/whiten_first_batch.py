"""Whitening fitted on a stream's first batch: how large must that batch be?

``KeyCodebook(whiten=m)`` fits its whitening map once, on the data the keys
are first fitted on; a classifier streamed from nothing fits both on its
first ``partial_fit`` batch. This script streams the training set in i.i.d.
batches (the first of ``--first`` rows, the rest of ``--batch``), with the
codebook fitted on the first batch, whitened (``--whiten``, orthogonal
heads) or not (the default codebook), and prints the test accuracy.

Run::

    python benchmarks/whiten_first_batch.py --dataset mnist --encoder efficientnet-lite0 \\
        --max-train 4000 --max-test 2000

Embeddings are cached in ``skkvb-bench``'s cache.
"""

import os
import time

import numpy as np
from _common import Table, add_data_arguments, comma_list, embedded_data, make_parser

from skkvb import KeyCodebook, KeyValueBottleneckClassifier


def parse_args():
    parser = make_parser(__doc__)
    add_data_arguments(parser)
    parser.add_argument("--first", type=comma_list(int), default=[100, 500, 2000])
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--whiten", type=int, default=256)
    parser.add_argument("--seeds", type=comma_list(int), default=[0])
    return parser.parse_args()


def streamed_accuracy(X, y, X_test, y_test, order, first, batch, whiten, seed):
    codebook = (KeyCodebook(random_state=seed) if whiten is None
                else KeyCodebook(whiten=whiten, projection="orthogonal", random_state=seed))
    model = KeyValueBottleneckClassifier(codebook=codebook, device="cpu", random_state=seed)
    model.partial_fit(X[order[:first]], y[order[:first]], classes=np.unique(y))
    for start in range(first, len(order), batch):
        model.partial_fit(X[order[start : start + batch]], y[order[start : start + batch]])
    return model.score(X_test, y_test)


def main():
    args = parse_args()
    X, y, X_test, y_test = embedded_data(args)
    table = Table([("first batch", 12, "d"), ("whiten", 8, ""), ("seed", 6, "d"),
                   ("accuracy", 10, ".4f"), ("time (s)", 10, ".1f")], sep="  ")
    print(f"{args.dataset} / {args.encoder}: {len(y)} train, {len(y_test)} test, later "
          f"batches of {args.batch}")
    print(table.header(), flush=True)
    for seed in args.seeds:
        order = np.random.RandomState(seed).permutation(len(y))
        for first in args.first:
            for whiten in (None, args.whiten):
                tic = time.perf_counter()
                accuracy = streamed_accuracy(X, y, X_test, y_test, order, first, args.batch,
                                             whiten, seed)
                print(table.row(first, "none" if whiten is None else str(whiten), seed, accuracy,
                                time.perf_counter() - tic), flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
