"""Speed and memory of the engine at the paper's scale, against the bars of DESIGN.md.

Configuration: N=10,000 synthetic embeddings, D=512, C=256 codebooks, K=4096
keys, d_k=14, d_v=10 classes, batch 256, on the CPU with 2 torch threads.

    python benchmarks/bench_engine.py [--n-samples 10000] [--threads 2] [--device cpu]

Prints seconds per EMA key-fitting epoch, seconds to encode all samples,
seconds per value-training epoch (SGD), seconds of a counting fit (codes included)
and the peak resident memory of the process. ``--n-codebooks 64 --key-dim 32`` gives
the default shape of KeyCodebook.
"""

import argparse
import contextlib
import io
import re
import resource
import time

import numpy as np
import torch
from sklearn.frozen import FrozenEstimator

from skkvb import KeyCodebook, KeyValueBottleneckClassifier

BARS = {"key_epoch_s": 20.0, "encode_s": 15.0, "value_epoch_s": 0.2, "peak_rss_gb": 1.5}
REFERENCE = {"key_epoch_s": 340.0, "encode_s": None, "value_epoch_s": 100.0, "peak_rss_gb": 4.6}


def synthetic_embeddings(n_samples, n_features, n_classes, seed=0):
    """A Gaussian mixture: one cluster per class, like frozen-encoder features."""
    rng = np.random.RandomState(seed)
    centers = rng.normal(size=(n_classes, n_features)).astype(np.float32)
    y = rng.randint(n_classes, size=n_samples)
    X = centers[y] + 0.8 * rng.normal(size=(n_samples, n_features)).astype(np.float32)
    return X, y


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    torch.set_num_threads(args.threads)

    X, y = synthetic_embeddings(args.n_samples, args.n_features, args.n_classes)
    codebook = KeyCodebook(
        n_codebooks=args.n_codebooks, n_keys=args.n_keys, key_dim=args.key_dim,
        n_epochs=1, batch_size=256, device=args.device, random_state=0,
    )
    figures = {}
    figures["key_epoch_s"], _ = timed(lambda: codebook.fit(X))
    figures["encode_s"], _ = timed(lambda: codebook.transform(X))

    frozen = FrozenEstimator(codebook)

    clf = KeyValueBottleneckClassifier(
        codebook=frozen, value_update="sgd", max_iter=args.epochs, batch_size=256,
        device=args.device, random_state=0, verbose=1,
    )
    # verbose=1 prints the seconds of each epoch's SGD loop (codes are computed
    # once before the loop); the median is the figure.
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        clf.fit(X, y)
    epoch_seconds = [float(s) for s in re.findall(r"loss [\d.]+, ([\d.]+) s", log.getvalue())]
    assert len(epoch_seconds) == args.epochs, log.getvalue()
    figures["value_epoch_s"] = float(np.median(epoch_seconds))
    figures["predict_s"], _ = timed(lambda: clf.predict(X))
    # Counting values (the default): one pass, codes included.
    counting = KeyValueBottleneckClassifier(codebook=frozen, device=args.device)
    figures["count_fit_s"], _ = timed(lambda: counting.fit(X, y))
    figures["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    print(
        f"N={args.n_samples} D={args.n_features} C={args.n_codebooks} K={args.n_keys} "
        f"d_k={args.key_dim} d_v={args.n_classes} batch=256 device={args.device} "
        f"threads={torch.get_num_threads()} torch={torch.__version__}"
    )
    print(f"{'step':<34}{'ours':>10}{'bar':>10}{'reference':>11}")
    names = {
        "key_epoch_s": "EMA key-fitting epoch (s)",
        "encode_s": f"codes for {args.n_samples} samples (s)",
        "value_epoch_s": "value-training epoch (s)",
        "predict_s": f"predict {args.n_samples} samples (s)",
        "count_fit_s": "counting values, codes included (s)",
        "peak_rss_gb": "peak resident memory (GB)",
    }
    for key, label in names.items():
        bar = BARS.get(key)
        ref = REFERENCE.get(key)
        print(
            f"{label:<34}{figures[key]:>10.3f}"
            f"{'' if bar is None else f'<= {bar:g}':>10}{'' if ref is None else f'{ref:g}':>11}"
        )
    return figures


if __name__ == "__main__":
    main()
