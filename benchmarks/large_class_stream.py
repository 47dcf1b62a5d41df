"""A simulated ImageNet-1k-scale class-incremental stream through counting values.

Synthetic 512-d embeddings with class structure: each class has a latent
point on a random ``--latent-dim``-dimensional manifold, mapped into 512
dimensions by a fixed random two-layer map (unit-norm class means); a sample
is its class mean plus isotropic Gaussian noise of standard deviation
``--noise`` per dimension. Samples are generated phase by phase from a seed,
so the whole stream (1.28M x 512 by default) is never held in memory.

The stream has ``--n-classes`` classes, ``--samples-per-class`` training
samples each, in phases of ``--classes-per-phase`` classes (one
``partial_fit`` call per phase, classes growing). The bottleneck has the
paper's shape by default (``--n-codebooks 256 --n-keys 4096 --key-dim 14``);
its keys are fitted beforehand on ``--n-unlabelled`` unlabelled samples drawn
from the same generator (random classes, another seed) and frozen. Values are
counted; the count store is chosen automatically (sparse beyond 64 MiB of
dense table).

Printed per phase: seconds, peak resident memory of the process (ru_maxrss),
current resident memory (psutil, if installed), the stored (key, class)
entries and their bytes. At the end: accuracy on ``--test-per-class``
held-out samples per class, the dense table the counts would have needed, and
an order check: the first ``--check-phases`` phases (``--check-samples``
samples per class) learned as a stream and in one shuffled ``fit`` give
identical stored counts (counting does not depend on order, so the stream's
accuracy is that of i.i.d. training).

Usage::

    python benchmarks/large_class_stream.py                     # 1,000 classes, ~20 min
    python benchmarks/large_class_stream.py --n-classes 10000 --samples-per-class 64
    python benchmarks/large_class_stream.py --n-classes 100 --samples-per-class 64 \\
        --n-keys 512 --n-codebooks 64                           # a quick run
"""

import os
import time
from pathlib import Path

import numpy as np
import torch
from _common import load_average, make_parser, peak_rss_gb  # next to this script
from sklearn.frozen import FrozenEstimator

from skkvb import KeyCodebook, KeyValueBottleneckClassifier
from skkvb.engine.values import count

try:
    import psutil
except ImportError:  # current RSS is then not printed
    psutil = None

RESULTS = Path(__file__).parent / "results"
N_FEATURES = 512


class Stream:
    """Class-structured synthetic embeddings, generated on demand from a seed."""

    def __init__(self, n_classes, latent_dim, noise, seed):
        rng = np.random.RandomState(seed)
        first = rng.normal(size=(latent_dim, 4 * latent_dim)) / np.sqrt(latent_dim)
        second = rng.normal(size=(4 * latent_dim, N_FEATURES))
        latent = rng.normal(size=(n_classes, latent_dim))
        means = np.tanh(latent @ first) @ second
        self.means = (means / np.linalg.norm(means, axis=1, keepdims=True)).astype(np.float32)
        self.noise = noise
        self.seed = seed

    def samples(self, labels, stream_id):
        """Samples of these labels, from the random stream ``stream_id``."""
        rng = np.random.RandomState([self.seed, *stream_id])
        noise = rng.normal(scale=self.noise, size=(len(labels), N_FEATURES)).astype(np.float32)
        return self.means[labels] + noise

    def phase(self, classes, per_class, tag, index):
        y = np.repeat(classes, per_class)
        return self.samples(y, (tag, index)), y


def rss_gb():
    return None if psutil is None else psutil.Process().memory_info().rss / 2**30


def stored(model):
    """(entries, bytes) of a count model's store."""
    entries = model.sparse.n_entries if model.store == "sparse" else model.table.numel()
    return entries, model.storage_bytes


def main():
    parser = make_parser(__doc__)
    parser.add_argument("--n-classes", type=int, default=1000)
    parser.add_argument("--samples-per-class", type=int, default=1280)
    parser.add_argument("--classes-per-phase", type=int, default=10)
    parser.add_argument("--test-per-class", type=int, default=10)
    parser.add_argument("--n-codebooks", type=int, default=256)
    parser.add_argument("--n-keys", type=int, default=4096)
    parser.add_argument("--key-dim", type=int, default=14)
    parser.add_argument("--n-unlabelled", type=int, default=20_000)
    parser.add_argument("--key-epochs", type=int, default=1)
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--noise", type=float, default=0.04)
    parser.add_argument("--check-phases", type=int, default=3)
    parser.add_argument("--check-samples", type=int, default=100)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--store", choices=("auto", "dense", "sparse"), default="auto",
        help="force the count store (default: the automatic rule)",
    )
    parser.add_argument("--output", default=None, help="result file (default: by n-classes)")
    parser.add_argument(
        "--check-only", action="store_true",
        help="fit the keys and run the order check only, appending to the result file",
    )
    args = parser.parse_args()
    output = Path(args.output) if args.output else (
        RESULTS / f"large_class_stream_{args.n_classes}.txt"
    )
    lines = output.read_text().splitlines() if args.check_only and output.exists() else []

    def say(text):
        print(text, flush=True)
        lines.append(text)
        output.parent.mkdir(exist_ok=True)
        output.write_text("\n".join(lines) + "\n")

    if args.store != "auto":  # the rule's limit: 0 bytes, or no limit
        count.DENSE_LIMIT_BYTES = 0 if args.store == "sparse" else float("inf")
    shape = (args.n_codebooks, args.n_keys, args.key_dim)
    say(
        f"{args.n_classes} classes x {args.samples_per_class} samples, phases of "
        f"{args.classes_per_phase} classes; keys {'x'.join(map(str, shape))} fitted on "
        f"{args.n_unlabelled} unlabelled samples ({args.key_epochs} epochs); noise "
        f"{args.noise}, latent dim {args.latent_dim}, seed {args.seed}; store {args.store}; "
        f"n_jobs {args.n_jobs}, {os.cpu_count()} CPUs, torch {torch.__version__}; load average {load_average()}"
    )
    stream = Stream(args.n_classes, args.latent_dim, args.noise, args.seed)
    rng = np.random.RandomState(args.seed)
    X_key = stream.samples(rng.randint(args.n_classes, size=args.n_unlabelled), (1, 0))
    tic = time.perf_counter()
    keys = KeyCodebook(
        n_codebooks=args.n_codebooks, n_keys=args.n_keys, key_dim=args.key_dim,
        max_iter=args.key_epochs, random_state=args.seed, device="cpu", n_jobs=args.n_jobs,
    ).fit(X_key)
    del X_key
    say(f"keys fitted in {time.perf_counter() - tic:.1f} s; peak RSS {peak_rss_gb():.3f} GiB")

    def classifier():
        return KeyValueBottleneckClassifier(
            codebook=FrozenEstimator(keys), device="cpu", n_jobs=args.n_jobs, random_state=0
        )

    if args.check_only:
        check_order(stream, classifier, args, say)
        say(f"load average at the end {load_average()}")
        return
    clf = classifier()
    say(f"{'phase':>6}{'classes':>9}{'seconds':>9}{'peak RSS GiB':>14}{'RSS GiB':>9}"
        f"{'store':>8}{'entries':>13}{'store MiB':>11}")
    per_phase = args.classes_per_phase
    n_phases = -(-args.n_classes // per_phase)
    total = 0.0
    for p in range(n_phases):
        classes = np.arange(p * per_phase, min((p + 1) * per_phase, args.n_classes))
        X, y = stream.phase(classes, args.samples_per_class, 2, p)
        tic = time.perf_counter()
        clf.partial_fit(X, y)
        seconds = time.perf_counter() - tic
        total += seconds
        del X, y
        model = clf._value_model
        entries, nbytes = stored(model)
        rss = rss_gb()
        say(f"{p + 1:>6}{len(clf.classes_):>9}{seconds:>9.2f}{peak_rss_gb():>14.3f}"
            f"{'' if rss is None else format(rss, '.3f'):>9}{model.store:>8}{entries:>13}"
            f"{nbytes / 2**20:>11.1f}")
    dense_bytes = args.n_codebooks * args.n_keys * args.n_classes * 4
    say(f"training: {total:.1f} s for {args.n_classes * args.samples_per_class} samples "
        f"({1e3 * total / (args.n_classes * args.samples_per_class):.3f} ms/sample); "
        f"load average {load_average()}")
    say(f"stored: {entries} (key, class) entries, {nbytes / 2**20:.1f} MiB; a dense float32 "
        f"table would take {dense_bytes / 2**20:.1f} MiB ({dense_bytes / 2**30:.2f} GiB)")
    correct, n_test = 0, 0
    tic = time.perf_counter()
    per_call = max(1, 8192 // args.test_per_class)  # classes per predict call
    for start in range(0, args.n_classes, per_call):
        classes = np.arange(start, min(start + per_call, args.n_classes))
        X, y = stream.phase(classes, args.test_per_class, 3, start)
        correct += int((clf.predict(X) == y).sum())
        n_test += len(y)
    say(f"test accuracy {correct / n_test:.4f} on {n_test} held-out samples "
        f"({time.perf_counter() - tic:.1f} s); peak RSS {peak_rss_gb():.3f} GiB")
    del clf
    check_order(stream, classifier, args, say)
    say(f"load average at the end {load_average()}")


def check_order(stream, classifier, args, say):
    """The first phases as a stream and in one shuffled fit: identical counts."""
    per_phase = args.classes_per_phase
    parts = [
        stream.phase(np.arange(p * per_phase, (p + 1) * per_phase), args.check_samples, 2, p)
        for p in range(args.check_phases)
    ]
    streamed = classifier()
    for X, y in parts:
        streamed.partial_fit(X, y)
    X = np.concatenate([X for X, _ in parts])
    y = np.concatenate([y for _, y in parts])
    order = np.random.RandomState(1).permutation(len(y))
    shuffled = classifier().fit(X[order], y[order])
    a, b = streamed._value_model, shuffled._value_model
    if a.store == "sparse" and b.store == "sparse":
        same = all(
            torch.equal(array, b.sparse.arrays()[name])
            for name, array in a.sparse.arrays().items()
        )
    else:
        same = torch.equal(a.class_counts(), b.class_counts())
    say(f"order check: {args.check_phases} phases x {per_phase} classes x "
        f"{args.check_samples} samples as a stream vs one shuffled fit ({a.store} store): "
        f"stored counts identical: {same}; predictions identical: "
        f"{np.array_equal(streamed.predict(X), shuffled.predict(X))}")


if __name__ == "__main__":
    main()
