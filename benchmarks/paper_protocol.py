"""The paper's full class-incremental protocol at its scale: wall time and memory.

50,000 x 512 training embeddings and 10,000 test embeddings (synthetic, one
Gaussian cluster per class, as in ``bench_engine.py``), C=256 codebooks of
K=4096 keys of dimension 14, keys fitted for 10 EMA epochs on the training
inputs, then 5 class-incremental phases (2 classes each) of 2,000 SGD epochs
at learning rate 0.3, batch 256 -- the paper's settings. Prints the time of
each step, the total, the peak resident memory and the final test accuracy.

    python benchmarks/paper_protocol.py                 # CPU, 2 torch threads
    python benchmarks/paper_protocol.py --device cuda   # on a GPU

``--value-update count`` trains counting values instead (one pass over each
phase's codes, no epochs; the classifier's default). ``--value-epochs``,
``--key-epochs`` and ``--n-train`` shrink the protocol for a quick look; the
recorded figures use the defaults.
"""

import os
import time

import torch
from sklearn.frozen import FrozenEstimator

from skkvb import KeyCodebook, KeyValueBottleneckClassifier
from skkvb.streams import ClassIncrementalSplit

from _common import (  # benchmarks/_common.py, next to this script
    load_average,
    make_parser,
    peak_rss_gb,
    synthetic_embeddings,
    timed,
)


def load():
    """The 1-minute load average: other jobs on the cores slow every figure."""
    return f"load {load_average(os.getloadavg()[:1], digits=1)}"


def main(argv=None):
    parser = make_parser(__doc__)
    parser.add_argument("--n-train", type=int, default=50_000)
    parser.add_argument("--n-test", type=int, default=10_000)
    parser.add_argument("--key-epochs", type=int, default=10)
    parser.add_argument("--value-epochs", type=int, default=2000, help="per phase")
    parser.add_argument("--learning-rate", type=float, default=0.3)
    parser.add_argument("--value-update", choices=("sgd", "count"), default="sgd")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    # The estimators' n_jobs sets their threads per call; this covers the rest.
    torch.set_num_threads(args.threads)

    X, y = synthetic_embeddings(args.n_train + args.n_test, 512, 10)
    X_train, y_train, X_test, y_test = (
        X[: args.n_train], y[: args.n_train], X[args.n_train :], y[args.n_train :]
    )
    device_name = (
        torch.cuda.get_device_name() if str(args.device).startswith("cuda") else "CPU"
    )
    counting = args.value_update == "count"
    values = (
        "counting values" if counting
        else f"{args.value_epochs} epochs at lr {args.learning_rate}, batch 256"
    )
    print(
        f"paper protocol: {args.n_train} x 512 train, {args.n_test} test, C=256 K=4096 d_k=14, "
        f"keys {args.key_epochs} epochs, 5 phases x {values}; "
        f"device {args.device} ({device_name}), "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, {load()} at start",
        flush=True,
    )
    total_start = time.perf_counter()
    codebook = KeyCodebook(
        n_codebooks=256, n_keys=4096, key_dim=14, max_iter=args.key_epochs,
        device=args.device, random_state=0, n_jobs=args.threads,
    )
    seconds, _ = timed(codebook.fit, X_train)
    print(f"key fitting ({args.key_epochs} epochs): {seconds:.1f} s ({load()})", flush=True)

    if counting:
        model = KeyValueBottleneckClassifier(
            codebook=FrozenEstimator(codebook), value_update="count",
            device=args.device, random_state=0, n_jobs=args.threads,
        )
    else:
        model = KeyValueBottleneckClassifier(
            codebook=FrozenEstimator(codebook), value_update="sgd",
            learning_rate=args.learning_rate, partial_fit_max_iter=args.value_epochs,
            batch_size=256, device=args.device, random_state=0, n_jobs=args.threads,
        )
    split = ClassIncrementalSplit(n_phases=5, random_state=0)
    for phase, part in enumerate(split.split(X_train, y_train), start=1):
        seconds, _ = timed(model.partial_fit, X_train[part], y_train[part])
        print(
            f"phase {phase}: {len(part)} samples, codes + "
            f"{'counts' if counting else f'{args.value_epochs} epochs'}: "
            f"{seconds:.1f} s ({load()})",
            flush=True,
        )
    seconds, accuracy = timed(model.score, X_test, y_test)
    print(f"prediction of {args.n_test}: {seconds:.1f} s ({load()})")
    total = time.perf_counter() - total_start
    print(f"total wall time: {total:.1f} s ({total / 60:.1f} min)")
    print(f"peak resident memory: {peak_rss_gb():.2f} GB")
    if str(args.device).startswith("cuda"):
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    print(f"final class-incremental test accuracy: {accuracy:.4f}")


if __name__ == "__main__":
    main()
