"""Busy machines: the estimators' speed beside CPU-bound processes, per ``n_jobs``.

Times, on standardised digits (1,797 samples, 64 features) at the default
shape (64 codebooks x ``n_keys="auto"`` keys of dimension 32):

* ``key fit``: ``KeyCodebook.fit`` (EMA key fitting, ``--max-iter`` epochs);
* ``encode``: ``KeyCodebook.transform`` of the samples;
* ``count fit``: ``KeyValueBottleneckClassifier.fit`` with the codebook frozen
  (codes and one counting pass);
* ``sgd fit``: the same with ``value_update="sgd"`` (``--sgd-epochs`` epochs);
* ``predict``: the counting classifier's ``predict``;

first on the machine as it is, then beside ``k`` busy processes (pure Python
loops that this script starts and stops), for each ``n_jobs``. Each figure is
the median of ``--repeats`` runs, the settings interleaved; the ratio is to the
same setting's idle figure, and ``vs best`` to the fastest idle setting of
that step. It also prints the size of the default classifier fitted on digits,
pickled. The load average is printed with the figures: "idle" means the
machine as it was, and other jobs slow every figure.

Run::

    python benchmarks/busy_machine.py
    python benchmarks/busy_machine.py --busy 0,1,2,4 --n-jobs none,1,2,-1 --repeats 5

and the results land in ``benchmarks/results/busy_machine.txt`` (``--out``).
"""

import pickle
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.frozen import FrozenEstimator
from sklearn.preprocessing import StandardScaler

from skkvb import KeyCodebook, KeyValueBottleneckClassifier

from _common import Table, comma_list, load_average, make_parser, parse_shape, timed

STEPS = ("key fit", "encode", "count fit", "sgd fit", "predict")
SPINNER = "while True:\n    pass\n"
RESULTS = Path(__file__).parent / "results"


def n_jobs_value(text):
    return None if text.lower() == "none" else int(text)


def parse_args():
    parser = make_parser(__doc__)
    parser.add_argument("--busy", type=comma_list(int), default=[0, 2],
                        help="numbers of busy processes to run beside (0: none)")
    parser.add_argument("--n-jobs", type=comma_list(n_jobs_value), default=[None, 1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-samples", type=int, default=None, help="default: all 1,797")
    parser.add_argument("--shape", type=parse_shape, default=None,
                        help="CxKxD, e.g. 256x4096x14 (default: KeyCodebook's, n_keys='auto')")
    parser.add_argument("--max-iter", type=int, default=3, help="key-fitting epochs")
    parser.add_argument("--sgd-epochs", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "busy_machine.txt"))
    return parser.parse_args()


def digits(n_samples):
    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X).astype(np.float32)
    return X[:n_samples], y[:n_samples]


def codebook_for(args, n_jobs):
    params = {"max_iter": args.max_iter, "device": "cpu", "random_state": 0, "n_jobs": n_jobs}
    if args.shape is not None:
        params.update(zip(("n_codebooks", "n_keys", "key_dim"), args.shape))
    return KeyCodebook(**params)


def time_steps(args, n_jobs, X, y):
    """Seconds of each step of STEPS with this ``n_jobs``."""
    seconds = {}
    seconds["key fit"], codebook = timed(codebook_for(args, n_jobs).fit, X)
    seconds["encode"], _ = timed(codebook.transform, X)
    frozen = FrozenEstimator(codebook)
    counting = KeyValueBottleneckClassifier(frozen, device="cpu", random_state=0, n_jobs=n_jobs)
    seconds["count fit"], _ = timed(counting.fit, X, y)
    sgd = KeyValueBottleneckClassifier(
        frozen, value_update="sgd", max_iter=args.sgd_epochs, device="cpu", random_state=0,
        n_jobs=n_jobs,
    )
    seconds["sgd fit"], _ = timed(sgd.fit, X, y)
    seconds["predict"], _ = timed(counting.predict, X)
    return seconds


def start_busy(k):
    """``k`` CPU-bound processes (pure Python loops); stop them with stop_busy."""
    processes = [subprocess.Popen([sys.executable, "-c", SPINNER]) for _ in range(k)]
    time.sleep(0.5 if k else 0)  # let them start spinning
    return processes


def stop_busy(processes):
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait()


def measure(args, X, y, log):
    """{(busy, n_jobs): {step: median seconds}}, with the load seen at each level."""
    results = {}
    for busy in args.busy:
        processes = start_busy(busy)
        try:
            runs = {n_jobs: [] for n_jobs in args.n_jobs}
            for _ in range(args.repeats):
                for n_jobs in args.n_jobs:
                    runs[n_jobs].append(time_steps(args, n_jobs, X, y))
            load = load_average()
        finally:
            stop_busy(processes)
        for n_jobs, seconds in runs.items():
            results[busy, n_jobs] = {
                step: statistics.median(run[step] for run in seconds) for step in STEPS
            }
        log(f"beside {busy} busy process(es): load average {load}")
    return results


def default_model_size(log):
    """Fit the default classifier on digits (1,257 samples, a 70% split's size)
    and report its shape and pickled size."""
    X, y = digits(1257)
    seconds, model = timed(KeyValueBottleneckClassifier(device="cpu", random_state=0).fit, X, y)
    size = len(pickle.dumps(model)) / 1e6
    codebook = model.codebook_
    log(
        f"default classifier fitted on 1,257 digits: {codebook.n_codebooks_} x "
        f"{codebook.n_keys_} x {codebook.key_dim_} keys, pickled {size:.1f} MB, fit {seconds:.1f} s"
    )


def report(args, results, log):
    table = Table([("busy", 6, ""), ("n_jobs", 8, ""), ("step", 11, ""), ("seconds", 9, ".3f"),
                   ("vs idle", 9, ".2f"), ("vs best", 9, ".2f")])
    log(table.header())
    idle = args.busy[0]
    for busy in args.busy:
        for n_jobs in args.n_jobs:
            for step in STEPS:
                seconds = results[busy, n_jobs][step]
                best = min(results[idle, other][step] for other in args.n_jobs)
                log(table.row(str(busy), str(n_jobs), step, seconds,
                              seconds / results[idle, n_jobs][step], seconds / best))


def main():
    args = parse_args()
    lines = []

    def log(text):
        print(text, flush=True)
        lines.append(text)

    X, y = digits(args.n_samples)
    log("python " + " ".join(sys.argv))
    log(f"digits: {X.shape[0]} samples x {X.shape[1]} features; codebook "
        f"{args.shape or 'default (64 x auto x 32)'}, {args.max_iter} key epoch(s), "
        f"{args.sgd_epochs} SGD epoch(s); torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads at start; load average {load_average()}")
    tic = time.perf_counter()
    results = measure(args, X, y, log)
    report(args, results, log)
    default_model_size(log)
    log(f"wall time {time.perf_counter() - tic:.0f} s; load average at the end {load_average()}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
