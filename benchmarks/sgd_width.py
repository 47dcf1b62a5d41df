"""Per-epoch SGD time across class-incremental phases: fixed width against a growing label set.

The paper's shape (C=256, K=4096, d_k=14), N synthetic embeddings of 10
classes, 5 class-incremental phases of 2 classes, SGD values at lr 0.3, batch
256, ``--epochs`` epochs per phase, run twice on the same frozen keys:

- ``declared``: all 10 classes passed to the first ``partial_fit`` (the value
  table is 10 wide from the start);
- ``growing``: no ``classes``; the table grows with the labels seen (2, 4, ...
  10 classes, plus the "not yet seen" column).

For each phase: the median epoch seconds, the medians of its first and last
tenth of epochs (a trend within a phase), and the seconds per epoch per value
column (the cost of width). If the growth of the ``growing`` run is only the
width, its last phase costs what ``declared`` costs per epoch.

    python benchmarks/sgd_width.py [--n-samples 5000] [--epochs 200]

Writes ``benchmarks/results/sgd_width.txt``.
"""

import contextlib
import io
import os
import re
import time
from pathlib import Path

import numpy as np
import torch
from _common import Table, Tee, load_average, make_parser, synthetic_embeddings
from sklearn.frozen import FrozenEstimator

from skkvb import KeyCodebook, KeyValueBottleneckClassifier
from skkvb.streams import ClassIncrementalSplit

RESULT = Path(__file__).parent / "results" / "sgd_width.txt"
TABLE = Table(
    [("run", 10, ""), ("phase", 6, "d"), ("columns", 8, "d"), ("median s", 10, ".4f"),
     ("first 10%", 10, ".4f"), ("last 10%", 10, ".4f"), ("s / column", 11, ".5f"),
     ("load", 6, ".1f")]
)


def epoch_seconds(fn, *args, **kwargs):
    """Seconds of each SGD epoch of ``fn`` (a verbose classifier's partial_fit)."""
    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(io.StringIO()):
        fn(*args, **kwargs)
    return np.array([float(s) for s in re.findall(r"loss [\d.]+, ([\d.]+) s", log.getvalue())])


def run(name, codebook, X, y, parts, args, classes):
    model = KeyValueBottleneckClassifier(
        codebook=FrozenEstimator(codebook), value_update="sgd", learning_rate=0.3,
        partial_fit_max_iter=args.epochs, batch_size=256, random_state=0, verbose=1,
        n_jobs=args.threads,
    )
    for phase, part in enumerate(parts, start=1):
        load = os.getloadavg()[0]
        extra = {"classes": classes} if phase == 1 and classes is not None else {}
        seconds = epoch_seconds(model.partial_fit, X[part], y[part], **extra)
        columns = model._value_model.table.shape[1]
        tenth = max(1, len(seconds) // 10)
        median = float(np.median(seconds))
        print(TABLE.row(
            name, phase, columns, median, float(np.median(seconds[:tenth])),
            float(np.median(seconds[-tenth:])), median / columns, load,
        ), flush=True)


def main(argv=None):
    parser = make_parser(__doc__)
    parser.add_argument("--n-samples", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=200, help="per phase")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with open(args.output, "w") as file, contextlib.redirect_stdout(Tee(file)):
        print(
            f"sgd_width: N={args.n_samples} x 512, C=256 K=4096 d_k=14, 5 phases x {args.epochs} "
            f"epochs, lr 0.3, batch 256, {args.threads} threads, torch {torch.__version__}, "
            f"load {load_average()} at start ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})"
        )
        X, y = synthetic_embeddings(args.n_samples, 512, 10)
        codebook = KeyCodebook(
            n_codebooks=256, n_keys=4096, key_dim=14, max_iter=1, random_state=0,
            n_jobs=args.threads,
        ).fit(X)
        parts = list(ClassIncrementalSplit(n_phases=5, random_state=0).split(X, y))
        print(TABLE.header())
        run("declared", codebook, X, y, parts, args, classes=np.arange(10))
        run("growing", codebook, X, y, parts, args, classes=None)
        print(f"load {load_average()} at the end")


if __name__ == "__main__":
    main()
