"""Each engine step as a multiple of this machine's measured limit for it.

The limits are measured here, in the same run, right before each step, so that
the ratio holds on a machine that other jobs share:

- fp32 GEMM peak: a square 2048 product, and the search's own shape
  ``(rows x d_k) @ (d_k x K)`` on single-threaded workers, as the engine runs it;
- memory bandwidth: a plain copy, and ``index_select`` then scatter-add (the faster
  of ``index_add_`` and ``index_put_(accumulate=True)``, on one thread as the value
  steps run) of uniformly random rows of ``d_v`` floats of a (C * K, d_v) table.
  Real codes repeat rows, so a value epoch can beat this "limit" (ratio below 1).

Steps, at the paper's shape (C=256, K=4096, d_k=14) and the default shape
(C=64, K=4096, d_k=32), N=10,000 x 512 synthetic embeddings, d_v=10, batch 256:
one EMA key-fitting epoch and the codes of N samples (limit: their FLOPs over
the GEMM peak), one SGD value epoch (its gathered and scattered bytes over the
gather/scatter bandwidth) and a counting fit with its codes (codes' limit plus
its scatter's bytes). ``x of limit`` = measured time / limit: 1.0 is the machine's
limit; the project's bar is 2.

    python benchmarks/roofline.py [--n-samples 10000] [--threads 2]
    python benchmarks/roofline.py --shapes 256x4096x14,64x4096x32   # the default shapes
    python benchmarks/roofline.py --device cuda --output benchmarks/results/roofline_cuda.txt

Writes ``benchmarks/results/roofline.txt``.
"""

import contextlib
import io
import os
import time
from pathlib import Path

import torch
from _common import (  # benchmarks/_common.py, next to this script
    Table,
    Tee,
    comma_list,
    load_average,
    make_parser,
    median_epoch_seconds,
    parse_shape,
    synthetic_embeddings,
    timed,
)
from sklearn.frozen import FrozenEstimator

from skkvb import KeyCodebook, KeyValueBottleneckClassifier
from skkvb.engine.codes import block_shape
from skkvb.engine.threads import split_over_threads

RESULT = Path(__file__).parent / "results" / "roofline.txt"
TABLE = Table(
    [("step", 40, ""), ("seconds", 9, ".3f"), ("limit s", 9, ".3f"), ("x of limit", 11, ".2f"),
     ("limit from", 37, ""), ("load", 6, ".1f")]
)


# Where the peaks and steps run; main() sets it from --device.
DEVICE = torch.device("cpu")


def synchronised(fn):
    """``fn`` that waits for the GPU's queued work before returning."""
    if DEVICE.type != "cuda":
        return fn

    def call(*args, **kwargs):
        result = fn(*args, **kwargs)
        torch.cuda.synchronize(DEVICE)
        return result

    return call


def best_of(fn, repeats=3):
    """Smallest wall time of ``repeats`` calls after one warm-up call."""
    fn = synchronised(fn)
    fn()
    return min(timed(fn)[0] for _ in range(repeats))


def load1():
    return os.getloadavg()[0]


# ------------------------------------------------------------------- peaks


def square_gemm_gflops(n_threads, size=2048):
    """fp32 GFLOP/s of a square product on ``n_threads`` intra-op threads."""
    a, b = torch.randn(size, size, device=DEVICE), torch.randn(size, size, device=DEVICE)
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        seconds = best_of(lambda: a @ b)
    finally:
        torch.set_num_threads(previous)
    return 2 * size**3 / seconds / 1e9


def search_gemm_gflops(n_codebooks, n_keys, key_dim, n_threads, n_rows=1024):
    """fp32 GFLOP/s of the search's products alone -- blocks of ``(rows x d_k) @
    (d_k x K)`` plus the key norms, as ``nearest_keys`` runs them on the CPU
    (codebooks split over single-threaded workers; on a GPU: batched blocks of
    all codebooks), without the minimum."""
    heads = torch.randn(n_codebooks, n_rows, key_dim, device=DEVICE)
    keys_t = torch.randn(n_codebooks, key_dim, n_keys, device=DEVICE)
    norms = torch.randn(n_codebooks, 1, n_keys, device=DEVICE)
    batched = DEVICE.type != "cpu"
    group, rows = block_shape(n_codebooks, n_keys, batched=batched)
    if batched:

        def batched_products():
            for c in range(0, n_codebooks, group):
                for start in range(0, n_rows, rows):
                    torch.baddbmm(
                        norms[c : c + group], heads[c : c + group, start : start + rows],
                        keys_t[c : c + group], alpha=-2.0,
                    )

        seconds = best_of(batched_products, repeats=2)
        return 2 * n_codebooks * n_rows * n_keys * key_dim / seconds / 1e9

    def products(codebooks):
        for c in codebooks:
            for start in range(0, n_rows, rows):
                torch.baddbmm(
                    norms[c : c + 1], heads[c : c + 1, start : start + rows], keys_t[c : c + 1],
                    alpha=-2.0,
                )

    seconds = best_of(lambda: split_over_threads(products, n_codebooks, n_threads), repeats=2)
    return 2 * n_codebooks * n_rows * n_keys * key_dim / seconds / 1e9


def copy_gbps(n_threads, n_bytes=256 * 2**20):
    """GB/s (read + write) of a plain copy of ``n_bytes``."""
    source = torch.randn(n_bytes // 4, device=DEVICE)
    target = torch.empty_like(source)
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        seconds = best_of(lambda: target.copy_(source))
    finally:
        torch.set_num_threads(previous)
    return 2 * n_bytes / seconds / 1e9


def gather_scatter_gbps(n_table_rows, width, n_batch_rows=256 * 256, n_batches=20):
    """GB/s of one thread's ``index_select`` then scatter-add (the faster of
    ``index_add_`` and ``index_put_(accumulate=True)``) of ``n_batch_rows`` random
    rows of ``width`` floats (bytes: rows read; rows read and written; indices)."""
    generator = torch.Generator().manual_seed(0)
    table = torch.zeros(n_table_rows, width, device=DEVICE)
    index = torch.randint(n_table_rows, (n_batches, n_batch_rows), generator=generator)
    index = index.to(DEVICE)

    def index_add():
        for rows in index:
            table.index_add_(0, rows, table.index_select(0, rows), alpha=-1e-3)

    def index_put():
        for rows in index:
            table.index_put_((rows,), table.index_select(0, rows).mul_(-1e-3), accumulate=True)

    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # as the value steps run (see skkvb.engine.threads)
    try:
        seconds = min(best_of(index_add, repeats=2), best_of(index_put, repeats=2))
    finally:
        torch.set_num_threads(previous)
    return n_batches * n_batch_rows * (3 * 4 * width + 2 * 8) / seconds / 1e9


# ------------------------------------------------------------------- steps


def shape_rows(args, shape, X, y):
    """Rows of the table for one (C, K, d_k) shape: each peak measured right
    before the step it bounds."""
    n_codebooks, n_keys, key_dim = shape
    n_samples, n_features = X.shape
    threads = args.threads
    search_flops = 2 * n_samples * n_codebooks * n_keys * key_dim
    projection_flops = 2 * n_samples * n_features * n_codebooks * key_dim
    rows = []

    def add(step, seconds, limit, source, load):
        rows.append((step, seconds, limit, seconds / limit, source, load))
        print(TABLE.row(*rows[-1]), flush=True)

    codebook = KeyCodebook(
        n_codebooks=n_codebooks, n_keys=n_keys, key_dim=key_dim, max_iter=1, batch_size=256,
        random_state=0, n_jobs=threads, device=args.device,
    )
    square = square_gemm_gflops(threads)
    ours = search_gemm_gflops(n_codebooks, n_keys, key_dim, threads)
    print(f"  GEMM peak: square 2048 {square:.1f} GFLOP/s, search shape (rows x {key_dim}) @ "
          f"({key_dim} x {n_keys}) {ours:.1f} GFLOP/s ({threads} threads)", flush=True)
    load = load1()
    seconds, _ = timed(synchronised(codebook.fit), X)
    add("EMA key-fitting epoch", seconds, (search_flops + projection_flops) / (square * 1e9),
        "(search+projection) / square", load)
    add("  (same)", seconds, search_flops / (ours * 1e9) + projection_flops / (square * 1e9),
        "search / its shape + proj / square", load)

    ours = search_gemm_gflops(n_codebooks, n_keys, key_dim, threads)
    load = load1()
    encode_seconds, _ = timed(codebook.transform, X)
    add(f"codes for {n_samples} samples", encode_seconds,
        (search_flops + projection_flops) / (square * 1e9), "(search+projection) / square", load)
    encode_limit = search_flops / (ours * 1e9) + projection_flops / (square * 1e9)
    add("  (same)", encode_seconds, encode_limit, "search / its shape + proj / square", load)

    # value rows: C per sample, d_v floats each
    width = args.n_classes
    bandwidth = gather_scatter_gbps(n_codebooks * n_keys, width)
    copy = copy_gbps(threads)
    print(f"  bandwidth: copy {copy:.1f} GB/s ({threads} threads), index_select + scatter-add of "
          f"rows of {width} floats {bandwidth:.2f} GB/s (1 thread)", flush=True)
    sgd_bytes = n_samples * n_codebooks * (3 * 4 * width + 2 * 8)
    clf = KeyValueBottleneckClassifier(
        codebook=FrozenEstimator(codebook), value_update="sgd", max_iter=args.epochs,
        batch_size=256, random_state=0, verbose=1, n_jobs=threads, device=args.device,
    )
    load = load1()
    log = _captured(clf.fit, X, y)
    epoch = median_epoch_seconds(log, args.epochs)
    add("SGD value epoch (median)", epoch, sgd_bytes / (bandwidth * 1e9),
        "bytes / gather+scatter GB/s", load)
    add("  (same)", epoch, sgd_bytes / (copy * 1e9), "bytes / copy GB/s", load)

    counting = KeyValueBottleneckClassifier(
        codebook=FrozenEstimator(codebook), n_jobs=threads, device=args.device
    )
    count_bytes = n_samples * n_codebooks * (2 * 4 * width + 8)
    load = load1()
    seconds, _ = timed(counting.fit, X, y)
    add("counting fit (codes included)", seconds,
        encode_limit + count_bytes / (bandwidth * 1e9), "codes' limit + scatter bytes", load)
    return rows


def _captured(fn, *args):
    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(io.StringIO()):
        fn(*args)
    return log.getvalue()


def main(argv=None):
    parser = make_parser(__doc__)
    parser.add_argument("--n-samples", type=int, default=10_000)
    parser.add_argument("--n-features", type=int, default=512)
    parser.add_argument("--n-classes", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=5, help="SGD value epochs timed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--shapes", type=comma_list(parse_shape), default=[(256, 4096, 14), (64, 4096, 32)],
        help="CxKxD shapes, comma-separated",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    global DEVICE
    DEVICE = torch.device(args.device)
    with open(args.output, "w") as file, contextlib.redirect_stdout(Tee(file)):
        print(
            f"roofline: N={args.n_samples} D={args.n_features} d_v={args.n_classes} batch 256, "
            f"device {args.device}, "
            f"{args.threads} threads, torch {torch.__version__}, {os.cpu_count()} CPUs, "
            f"load {load_average()} at start ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})"
        )
        X, y = synthetic_embeddings(args.n_samples, args.n_features, args.n_classes)
        for shape in args.shapes:
            print(f"\nshape C={shape[0]} K={shape[1]} d_k={shape[2]}")
            print(TABLE.header())
            shape_rows(args, shape, X, y)
        print(f"\nload {load_average()} at the end")


if __name__ == "__main__":
    main()
