"""Cold-start streams: the default classifier fed class-incrementally from nothing.

With no codebook given, ``KeyValueBottleneckClassifier.partial_fit`` fits its
keys on the first batch, which holds the first phase's classes only. This
script compares, per seed and on the full test set:

* ``cold``: that stream with ``reseed_unused_keys=False`` (keys frozen after
  the first batch);
* ``reseed``: the same stream with ``reseed_unused_keys=True`` (the default):
  before each later batch, the keys no trained sample fetched are re-seeded on
  the batch's heads;
* ``iid stream``: the same partial_fit calls on i.i.d. batches (reseeding on);
* ``iid fit``: one ``fit`` on all training data (keys fitted on all of it).

Run::

    python benchmarks/cold_start.py --dataset digits
    python benchmarks/cold_start.py --dataset fashion-mnist --encoder efficientnet-lite0 \\
        --max-train 4000 --max-test 2000

Image encoders are slow on a CPU (EfficientNet-Lite0: tens of images a second);
embeddings are cached in ``skkvb-bench``'s cache.
"""

import time

import numpy as np
from _common import (
    Table,
    add_data_arguments,
    comma_list,
    embedded_data,
    make_parser,
    parse_shape,
)

from skkvb import KeyCodebook, KeyValueBottleneckClassifier
from skkvb.streams import ClassIncrementalSplit, IIDSplit, make_phases


def parse_args():
    parser = make_parser(__doc__)
    add_data_arguments(parser)
    parser.add_argument("--phases", type=int, default=5)
    parser.add_argument("--seeds", type=comma_list(int), default=[0, 1, 2])
    parser.add_argument(
        "--shape", type=parse_shape, default=None,
        help="codebooks x keys x key dimension, e.g. 64x256x8 (default: KeyCodebook's)",
    )
    return parser.parse_args()


def classifier(args, seed, reseed=True):
    codebook = None
    if args.shape is not None:
        n_codebooks, n_keys, key_dim = args.shape
        codebook = KeyCodebook(n_codebooks=n_codebooks, n_keys=n_keys, key_dim=key_dim,
                               device="cpu")
    return KeyValueBottleneckClassifier(
        codebook=codebook, device="cpu", random_state=seed, reseed_unused_keys=reseed
    )


def streamed(model, phases):
    for X, y in phases:
        model.partial_fit(X, y)
    return model


def main():
    args = parse_args()
    Z_train, y_train, Z_test, y_test = embedded_data(args)
    print(f"{args.dataset} through {args.encoder}: {len(Z_train)} train, {len(Z_test)} test; "
          f"codebook {args.shape or 'default'}; {args.phases} phases")
    table = Table([("seed", 6, ""), ("cold", 8, ".3f"), ("reseed", 8, ".3f"),
                   ("iid stream", 12, ".3f"), ("iid fit", 9, ".3f"), ("reseed s", 10, ".1f")])
    print(table.header())
    scores = []
    for seed in args.seeds:
        incremental = make_phases(
            Z_train, y_train, ClassIncrementalSplit(args.phases, random_state=seed)
        )
        iid = make_phases(Z_train, y_train, IIDSplit(args.phases, random_state=seed))
        cold = streamed(classifier(args, seed, reseed=False), incremental).score(Z_test, y_test)
        tic = time.perf_counter()
        reseed = streamed(classifier(args, seed), incremental).score(Z_test, y_test)
        seconds = time.perf_counter() - tic
        iid_stream = streamed(classifier(args, seed), iid).score(Z_test, y_test)
        iid_fit = classifier(args, seed).fit(Z_train, y_train).score(Z_test, y_test)
        scores.append((cold, reseed, iid_stream, iid_fit))
        print(table.row(str(seed), cold, reseed, iid_stream, iid_fit, seconds), flush=True)
    print(table.row("mean", *np.mean(scores, axis=0)))


if __name__ == "__main__":
    main()
