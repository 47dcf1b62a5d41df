"""Counting values fitted on a dask array: ``skkvb.dask.fit`` on 1 and 2 workers vs in memory.

``--n-samples`` x ``--n-features`` Gaussian rows are generated lazily, on the
workers (``dask.array.random``, ``--chunk`` rows per block), with labels that
are a function of the rows (4 classes). Keys are fitted beforehand on the
first 2,000 rows (the only rows the client ever holds) and passed frozen.
Each cluster is a ``LocalCluster`` on 127.0.0.1 with one thread per worker.

Printed, per setting: seconds to fit (encoding and counting included, best
of ``--repeats``) and the growth of the client process's peak resident memory
during the fits. "in memory" computes the array into the client and calls
``fit`` there (on one torch thread); it runs last, since it raises the peak.
The dask fits are checked to give the in-memory class counts. Results go to
``benchmarks/results/bench_dask_fit.txt``.

Usage::

    python benchmarks/bench_dask_fit.py [--n-samples 200000] [--n-features 64]
        [--chunk 25000] [--repeats 2]
"""

import logging
import os
from pathlib import Path

import dask
import dask.array as da
import numpy as np
from _common import load_average, make_parser, peak_rss_gb, timed  # next to this script
from distributed import Client, LocalCluster
from sklearn.frozen import FrozenEstimator

import skkvb.dask
from skkvb import KeyCodebook, KeyValueBottleneckClassifier

RESULTS = Path(__file__).parent / "results" / "bench_dask_fit.txt"


def lazy_data(n_samples, n_features, chunk):
    X = da.random.RandomState(0).normal(size=(n_samples, n_features), chunks=(chunk, -1))
    y = (X[:, 0] > 0).astype(np.int64) + 2 * (X[:, 1] > 0).astype(np.int64)
    return X, y


def classifier(keys):
    return KeyValueBottleneckClassifier(codebook=FrozenEstimator(keys), device="cpu", n_jobs=1)


def main():
    parser = make_parser(__doc__)
    parser.add_argument("--n-samples", type=int, default=200_000)
    parser.add_argument("--n-features", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=25_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    X, y = lazy_data(args.n_samples, args.n_features, args.chunk)
    keys = KeyCodebook(n_codebooks=32, n_keys=256, key_dim=8, random_state=0, device="cpu")
    keys.fit(X[:2000].compute())
    lines = [
        (
            f"{args.n_samples} x {args.n_features} float64 rows ({X.nbytes / 2**30:.2f} GiB), "
            f"blocks of {args.chunk}; keys 32 x 256 x 8; {os.cpu_count()} CPUs, "
            f"load average {load_average()}"
        ),
        f"{'setting':<28}{'seconds':>10}{'speed-up':>10}{'client peak RSS growth':>26}",
    ]
    print(*lines, sep="\n")
    seconds, counts = {}, {}
    for n_workers in (1, 2):
        with LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=None, silence_logs=logging.ERROR,
        ) as cluster, Client(cluster):
            peak = peak_rss_gb()
            best = min(
                timed(skkvb.dask.fit, classifier(keys), X, y) for _ in range(args.repeats)
            )
            counts[n_workers] = best[1].class_counts_
            seconds[n_workers] = best[0]
            growth = peak_rss_gb() - peak
        name = f"skkvb.dask.fit, {n_workers} worker(s)"
        lines.append(
            f"{name:<28}{best[0]:>10.2f}{seconds[1] / best[0]:>10.2f}{growth:>22.3f} GiB"
        )
        print(lines[-1])
    peak = peak_rss_gb()
    with dask.config.set(scheduler="synchronous"):
        in_memory = min(
            timed(lambda: classifier(keys).fit(X.compute(), y.compute()))
            for _ in range(args.repeats)
        )
    growth = peak_rss_gb() - peak
    lines.append(
        f"{'in memory (compute + fit)':<28}{in_memory[0]:>10.2f}"
        f"{seconds[1] / in_memory[0]:>10.2f}{growth:>22.3f} GiB"
    )
    print(lines[-1])
    same = all(np.array_equal(c, in_memory[1].class_counts_) for c in counts.values())
    lines.append(f"dask class counts equal the in-memory ones: {same}; "
                 f"load average after {load_average()}")
    print(lines[-1])
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
