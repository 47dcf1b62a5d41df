"""Memory of counting values against the number of classes: dense table vs sparse store.

One fixed stream: ``--n-samples`` synthetic 512-d embeddings of
``--fine-classes`` classes (the generator of ``large_class_stream.py``),
encoded once by keys of the paper's shape (256 x 4096 x 14, fitted on
``--n-unlabelled`` other samples). For each number of classes m in
``--n-classes``, the labels are the fine classes merged into m groups
(``fine * m // fine_classes``): the same codes, labels from coarse to fine.
Each (m, store) is counted in a fresh child process (batches of
``--batch`` samples, as ``partial_fit`` would), then 1,024 samples are
decoded; printed: the bytes of the count storage, the stored entries, the
child's peak resident memory, and seconds to count and to decode. Dense
tables beyond ``--max-dense-gib`` are not allocated: their size is printed.

Results go to ``benchmarks/results/value_memory.txt`` and, with ``--plot``,
the figure of the documentation to ``docs/_static/value_memory.png``.

Usage::

    python benchmarks/value_memory.py [--n-samples 20000] [--plot]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import (  # next to this script
    comma_list,
    load_average,
    make_parser,
    peak_rss_gb,
)

HERE = Path(__file__).parent
RESULTS = HERE / "results" / "value_memory.txt"
FIGURE = HERE.parent / "docs" / "_static" / "value_memory.png"


def child(codes_file, labels_file, store, batch):
    """Count and decode in this (fresh) process; print a JSON line of figures."""
    import torch

    from skkvb.engine.codes import flat_codes
    from skkvb.engine.values import CountValues

    torch.set_num_threads(1)
    codes = torch.as_tensor(np.load(codes_file).astype(np.int64))
    labels = torch.as_tensor(np.load(labels_file))
    n_classes = int(labels.max()) + 1
    model = CountValues(256, 4096, n_classes, growing=False, device=torch.device("cpu"),
                        store=store)
    tic = time.perf_counter()
    for start in range(0, len(labels), batch):
        rows = flat_codes(codes[start : start + batch], 4096)
        model.update(rows, labels[start : start + batch], None, max_iter=1, random_state=None)
    counting = time.perf_counter() - tic
    tic = time.perf_counter()
    model.logits(flat_codes(codes[:1024], 4096), count_smoothing=0.1)
    decoding = time.perf_counter() - tic
    entries = model.sparse.n_entries if store == "sparse" else model.table.numel()
    print(json.dumps({
        "bytes": model.storage_bytes, "entries": entries, "peak_rss_gib": peak_rss_gb(),
        "count_s": counting, "decode_s": decoding,
    }))


def encoded(args):
    """Codes and fine labels of the fixed stream, as .npy files in a temporary folder."""
    from large_class_stream import Stream  # next to this script

    from skkvb import KeyCodebook

    stream = Stream(args.fine_classes, latent_dim=16, noise=args.noise, seed=0)
    rng = np.random.RandomState(0)
    keys = KeyCodebook(n_codebooks=256, n_keys=4096, key_dim=14, max_iter=1, random_state=0,
                       device="cpu", n_jobs=args.n_jobs)
    keys.fit(stream.samples(rng.randint(args.fine_classes, size=args.n_unlabelled), (1, 0)))
    fine = rng.randint(args.fine_classes, size=args.n_samples)
    X = stream.samples(fine, (2, 0))
    codes = np.concatenate([keys.transform(X[s : s + 4096]) for s in range(0, len(X), 4096)])
    folder = Path(tempfile.mkdtemp(prefix="value_memory_"))
    np.save(folder / "codes.npy", codes.astype(np.int16))
    return folder, fine


def main():
    parser = make_parser(__doc__)
    parser.add_argument("--n-samples", type=int, default=20_000)
    parser.add_argument("--fine-classes", type=int, default=10_000)
    parser.add_argument("--n-classes", type=comma_list(int),
                        default=[10, 30, 100, 300, 1000, 3000, 10000])
    parser.add_argument("--n-unlabelled", type=int, default=20_000)
    parser.add_argument("--noise", type=float, default=0.04)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--max-dense-gib", type=float, default=1.0)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--plot", action="store_true")
    parser.add_argument("--replot", action="store_true",
                        help="only draw the figure again, from the results file")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)  # the per-setting process
    args = parser.parse_args()
    if args.child:
        codes_file, labels_file, store, batch = args.child
        return child(codes_file, labels_file, store, int(batch))
    if args.replot:
        return plot(read_results(), args)
    lines = [
        (
            f"{args.n_samples} samples of {args.fine_classes} fine classes (noise {args.noise}), "
            f"keys 256x4096x14 fitted on {args.n_unlabelled}; batches of {args.batch}; "
            f"{os.cpu_count()} CPUs, load average {load_average()}"
        ),
        (
            f"{'classes':>8}{'store':>8}{'MiB':>10}{'entries':>12}{'peak RSS GiB':>14}"
            f"{'count s':>9}{'decode 1024 s':>15}"
        ),
    ]
    print(*lines, sep="\n", flush=True)
    folder, fine = encoded(args)
    figures = []
    for m in args.n_classes:
        np.save(folder / "labels.npy", (fine.astype(np.int64) * m) // args.fine_classes)
        for store in ("dense", "sparse"):
            dense_bytes = 256 * 4096 * m * 4
            if store == "dense" and dense_bytes > args.max_dense_gib * 2**30:
                lines.append(f"{m:>8}{store:>8}{dense_bytes / 2**20:>10.1f}"
                             f"{'(not allocated)':>26}")
                figures.append({"classes": m, "store": store, "bytes": dense_bytes})
            else:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", str(folder / "codes.npy"),
                     str(folder / "labels.npy"), store, str(args.batch)],
                    capture_output=True, text=True, check=True,
                )
                result = json.loads(out.stdout.strip().splitlines()[-1])
                figures.append({"classes": m, "store": store, **result})
                lines.append(
                    f"{m:>8}{store:>8}{result['bytes'] / 2**20:>10.1f}{result['entries']:>12}"
                    f"{result['peak_rss_gib']:>14.3f}{result['count_s']:>9.2f}"
                    f"{result['decode_s']:>15.2f}"
                )
            print(lines[-1], flush=True)
    lines.append(f"load average at the end {load_average()}")
    print(lines[-1])
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    if args.plot:
        plot(figures, args)


def read_results():
    """The figures of the results file, as :func:`main` collects them."""
    figures = []
    for line in RESULTS.read_text().splitlines()[2:-1]:
        cells = line.split()
        m, store = int(cells[0]), cells[1]
        if cells[3] == "(not":
            figures.append({"classes": m, "store": store, "bytes": 256 * 4096 * m * 4})
        else:
            figures.append({"classes": m, "store": store, "bytes": float(cells[2]) * 2**20,
                            "peak_rss_gib": float(cells[4])})
    return figures


def plot(figures, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    dense = [(f["classes"], f["bytes"] / 2**20) for f in figures if f["store"] == "dense"]
    sparse = [(f["classes"], f["bytes"] / 2**20) for f in figures if f["store"] == "sparse"]
    ax.plot(*zip(*dense), "o-", color="C0", label="dense table (allocated, or its size)")
    ax.plot(*zip(*sparse), "s-", color="C1", label="sparse store")
    for store, color in (("dense", "C0"), ("sparse", "C1")):
        rss = [(f["classes"], f["peak_rss_gib"] * 1024) for f in figures
               if f["store"] == store and "peak_rss_gib" in f]
        ax.plot(*zip(*rss), ".--", color=color, alpha=0.6,
                label=f"{store}: peak RSS of the counting process")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of classes")
    ax.set_ylabel("MiB")
    ax.set_title(f"Count storage, 256 x 4096 keys, a fixed stream of {args.n_samples} samples",
                 fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    FIGURE.parent.mkdir(exist_ok=True)
    fig.savefig(FIGURE, dpi=110)
    print(f"figure: {FIGURE}")


if __name__ == "__main__":
    main()
