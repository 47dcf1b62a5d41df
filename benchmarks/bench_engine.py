"""Speed and memory of the engine at the paper's scale, against the project's bars.

Configuration: N=10,000 synthetic embeddings, D=512, C=256 codebooks, K=4096
keys, d_k=14, d_v=10 classes, batch 256, on the CPU with 2 torch threads.

    python benchmarks/bench_engine.py [--n-samples 10000] [--threads 2] [--device cpu]

Prints seconds per EMA key-fitting epoch, seconds to encode all samples,
seconds per value-training epoch (SGD), seconds of a counting fit (codes included)
and the peak resident memory of the process. ``--n-codebooks 64 --key-dim 32`` gives
the default shape of KeyCodebook.

Two columns stand beside ours: ``bar``, the most each step may take at the
paper's configuration (the project's speed and memory targets), and
``reference``, the figures of the authors' reference implementation on the
same configuration and machine type, measured once and not re-run here.
"""

import contextlib
import io

import torch
from sklearn.frozen import FrozenEstimator

from skkvb import KeyCodebook, KeyValueBottleneckClassifier

from _common import (  # benchmarks/_common.py, next to this script
    Table,
    make_parser,
    median_epoch_seconds,
    peak_rss_gb,
    synthetic_embeddings,
    timed,
)

BARS = {"key_epoch_s": 20.0, "encode_s": 15.0, "value_epoch_s": 0.2, "peak_rss_gb": 1.5}
REFERENCE = {"key_epoch_s": 340.0, "encode_s": None, "value_epoch_s": 100.0, "peak_rss_gb": 4.6}
TABLE = Table([("step", 34, ""), ("ours", 10, ".3f"), ("bar", 10, ""), ("reference", 11, "g")])


def main(argv=None):
    parser = make_parser(__doc__)
    parser.add_argument("--n-samples", type=int, default=10_000)
    parser.add_argument("--n-features", type=int, default=512)
    parser.add_argument("--n-codebooks", type=int, default=256)
    parser.add_argument("--n-keys", type=int, default=4096)
    parser.add_argument("--key-dim", type=int, default=14)
    parser.add_argument("--n-classes", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10, help="value epochs timed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    # The estimators' n_jobs sets their threads per call; this covers the rest.
    torch.set_num_threads(args.threads)

    X, y = synthetic_embeddings(args.n_samples, args.n_features, args.n_classes)
    codebook = KeyCodebook(
        n_codebooks=args.n_codebooks, n_keys=args.n_keys, key_dim=args.key_dim,
        max_iter=1, batch_size=256, device=args.device, random_state=0, n_jobs=args.threads,
    )
    figures = {}
    figures["key_epoch_s"], _ = timed(codebook.fit, X)
    figures["encode_s"], _ = timed(codebook.transform, X)

    frozen = FrozenEstimator(codebook)

    clf = KeyValueBottleneckClassifier(
        codebook=frozen, value_update="sgd", max_iter=args.epochs, batch_size=256,
        device=args.device, random_state=0, n_jobs=args.threads, verbose=1,
    )
    # verbose=1 prints the seconds of each epoch's SGD loop (codes are computed
    # once before the loop); the median is the figure.
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        clf.fit(X, y)
    figures["value_epoch_s"] = median_epoch_seconds(log.getvalue(), args.epochs)
    figures["predict_s"], _ = timed(clf.predict, X)
    # Counting values (the default): one pass, codes included.
    counting = KeyValueBottleneckClassifier(
        codebook=frozen, device=args.device, n_jobs=args.threads
    )
    figures["count_fit_s"], _ = timed(counting.fit, X, y)
    figures["peak_rss_gb"] = peak_rss_gb()

    print(
        f"N={args.n_samples} D={args.n_features} C={args.n_codebooks} K={args.n_keys} "
        f"d_k={args.key_dim} d_v={args.n_classes} batch=256 device={args.device} "
        f"threads={torch.get_num_threads()} torch={torch.__version__}"
    )
    print(TABLE.header())
    names = {
        "key_epoch_s": "EMA key-fitting epoch (s)",
        "encode_s": f"codes for {args.n_samples} samples (s)",
        "value_epoch_s": "value-training epoch (s)",
        "predict_s": f"predict {args.n_samples} samples (s)",
        "count_fit_s": "counting values, codes included (s)",
        "peak_rss_gb": "peak resident memory (GB)",
    }
    for key, label in names.items():
        bar = None if BARS.get(key) is None else f"<= {BARS[key]:g}"
        print(TABLE.row(label, figures[key], bar, REFERENCE.get(key)))
    return figures


if __name__ == "__main__":
    main()
