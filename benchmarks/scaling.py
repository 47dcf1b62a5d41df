"""How time and memory grow with N, C, K and the number of classes, step by step.

Around one base configuration (by default the classifier's default codebook
shape with K fixed: C=64 codebooks, K=4096 keys, d_k=32, 10 classes, N=4,000
synthetic 512-d embeddings, one torch thread; ``--base 10000x256x4096x14x10``
gives the paper's shape, about 4x slower), one variable is swept at a time:

- N, the number of samples (1k, 4k, 16k; ``--full`` adds 64k and 200k);
- C, the number of codebooks (16, 64, 256; ``--full``: 16, 32, ..., 256);
- K, the keys per codebook (256, 1024, 4096; ``--full``: 256, 512, ..., 4096);
- the number of classes (10, 100, 1000; ``--full``: 10, 30, 100, 300, 1000).

The base point is measured again in each sweep: on a shared machine the load
drifts within minutes, and a slope is only as good as its points' load.

Each configuration runs in a fresh process, which times five steps and the peak
resident memory of the process during each (``VmHWM`` of ``/proc/self/status``,
reset before each step): one EMA key-fitting epoch (``KeyCodebook.fit``,
``max_iter=1``), the codes of the N samples (``transform``), a counting fit
(``KeyValueBottleneckClassifier``, codes included), one SGD value epoch (the
median of ``--sgd-epochs`` epochs of a ``verbose=1`` fit; codes computed once
before them, not counted) and ``predict`` of the N samples. The data are
generated block by block in float32, so that 200k x 512 costs its 0.4 GB and no
float64 copy.

For each sweep, the slope of log(seconds) and of log(peak GB above the
process's baseline) against log(variable) is fitted per step: 1 means linear
growth, 0 none. Other jobs on the machine slow every figure: the load
averages at start and end are printed.

    python benchmarks/scaling.py                        # ~10 min on 2 busy cores
    python benchmarks/scaling.py --n-values 1000,4000,16000,64000   # + ~12 min at load 10
    python benchmarks/scaling.py --full                 # every grid point, 200k: hours
    python benchmarks/scaling.py --sweeps n --n-values 1000,4000,16000,64000,200000
    python benchmarks/scaling.py --plot docs/_static/scaling.png   # plot the JSON

Writes ``benchmarks/results/scaling.txt`` and ``scaling.json``; ``--plot``
draws the JSON's time and memory against each variable (no measuring, needs
matplotlib).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import (  # benchmarks/_common.py, next to this script
    Table,
    comma_list,
    load_average,
    make_parser,
    peak_rss_gb,
    peak_rss_since_reset_gb,
    reset_peak_rss,
)

RESULTS = Path(__file__).parent / "results"
STEPS = {
    "key_epoch": "EMA key-fitting epoch",
    "codes": "codes of N samples",
    "count_fit": "counting fit (codes incl.)",
    "sgd_epoch": "SGD value epoch",
    "predict": "predict N samples",
}
VARIABLES = {"c": "C (codebooks)", "k": "K (keys)", "classes": "classes", "n": "N (samples)"}
DEFAULT_GRID = {
    "n": [1000, 4000, 16000],
    "c": [16, 64, 256],
    "k": [256, 1024, 4096],
    "classes": [10, 100, 1000],
}
FULL_GRID = {
    "n": [1000, 4000, 16000, 64000, 200_000],
    "c": [16, 32, 64, 128, 256],
    "k": [256, 512, 1024, 2048, 4096],
    "classes": [10, 30, 100, 300, 1000],
}
BASE = "4000x64x4096x32x10"  # N x C x K x d_k x classes


# ------------------------------------------------------------------- child


def block_embeddings(n_samples, n_features, n_classes, seed=0, block=8192):
    """One Gaussian cluster per class (as ``synthetic_embeddings``), written
    block by block into one float32 array: no float64 array of N rows."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_classes, n_features), dtype=np.float32)
    y = rng.integers(n_classes, size=n_samples)
    X = np.empty((n_samples, n_features), dtype=np.float32)
    for start in range(0, n_samples, block):
        part = X[start : start + block]
        rng.standard_normal(part.shape, dtype=np.float32, out=part)
        part *= 0.8
        part += centers[y[start : start + block]]
    return X, y


def _peak_gb():
    """The process's peak RSS since the last reset, in GB (2**30 bytes)."""
    peak = peak_rss_since_reset_gb()
    return peak_rss_gb() if peak is None else peak  # else: a running maximum


def run_child(config, sgd_epochs, n_jobs):
    """Time the five steps of one configuration; return a JSON-able dict."""
    import contextlib
    import io

    import torch
    from _common import median_epoch_seconds
    from sklearn.frozen import FrozenEstimator

    from skkvb import KeyCodebook, KeyValueBottleneckClassifier

    torch.set_num_threads(max(1, n_jobs))
    X, y = block_embeddings(config["n"], 512, config["classes"])
    classes = np.unique(y)
    result = {"config": config, "seconds": {}, "peak_gb": {}}
    reset_peak_rss()
    result["baseline_gb"] = _peak_gb()  # interpreter, torch, sklearn and the data

    def step(name, fn):
        reset_peak_rss()
        start = time.perf_counter()
        out = fn()
        result["seconds"][name] = time.perf_counter() - start
        result["peak_gb"][name] = _peak_gb()
        return out

    codebook = KeyCodebook(
        n_codebooks=config["c"], n_keys=config["k"], key_dim=config["d_k"], max_iter=1,
        batch_size=256, random_state=0, n_jobs=n_jobs,
    )
    step("key_epoch", lambda: codebook.fit(X))
    step("codes", lambda: codebook.transform(X))
    frozen = FrozenEstimator(codebook)
    step("count_fit", lambda: KeyValueBottleneckClassifier(  # dropped after the step
        codebook=frozen, random_state=0, n_jobs=n_jobs).fit(X, y))
    sgd = KeyValueBottleneckClassifier(
        codebook=frozen, value_update="sgd", max_iter=sgd_epochs, batch_size=256,
        random_state=0, verbose=1, n_jobs=n_jobs,
    )
    log = io.StringIO()
    reset_peak_rss()
    with contextlib.redirect_stdout(log):
        sgd.fit(X, y)
    result["seconds"]["sgd_epoch"] = median_epoch_seconds(log.getvalue(), sgd_epochs)
    result["peak_gb"]["sgd_epoch"] = _peak_gb()  # the whole SGD fit, codes included
    step("predict", lambda: sgd.predict(X))
    result["n_classes_seen"] = len(classes)
    return result


def spawn(config, args):
    """Run one configuration in a fresh process; its figures as a dict."""
    command = [
        sys.executable, os.path.abspath(__file__), "--child", json.dumps(config),
        "--sgd-epochs", str(args.sgd_epochs), "--n-jobs", str(args.n_jobs),
    ]
    process = subprocess.run(command, capture_output=True, text=True, check=False)
    if process.returncode != 0:
        raise RuntimeError(f"{config} failed:\n{process.stdout}\n{process.stderr}")
    return json.loads(process.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ parent


def parse_base(text):
    n, c, k, d_k, classes = (int(part) for part in text.lower().split("x"))
    return {"n": n, "c": c, "k": k, "d_k": d_k, "classes": classes}


def slope(xs, ys):
    """Least-squares slope of log(y) on log(x); None with fewer than 2 positive points."""
    points = [(x, v) for x, v in zip(xs, ys) if v is not None and v > 0]
    if len(points) < 2:
        return None
    lx, ly = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    return float(np.polyfit(lx, ly, 1)[0])


def measure(args):
    base = parse_base(args.base)
    grid = FULL_GRID if args.full else DEFAULT_GRID
    overrides = {"n": args.n_values, "c": args.c_values, "k": args.k_values,
                 "classes": args.class_values}
    loads = {"start": load_average()}
    started = time.perf_counter()
    print(f"scaling: base N x C x K x d_k x classes = {args.base}, {args.n_jobs} thread(s), "
          f"{args.sgd_epochs} SGD epochs (median); load average at start {loads['start']}",
          flush=True)
    sweeps = {}
    table = Table([("configuration", 24, "")]
                  + [(name, 11, ".3f") for name in STEPS] + [("peak GB", 8, ".2f")])
    print(table.header() + "   (seconds; peak: the highest step's resident memory)")
    for variable in args.sweeps:
        values = overrides[variable] or grid[variable]
        sweeps[variable] = []
        for value in values:
            # The base point is measured again in each sweep: the load of a shared
            # machine drifts within minutes, and each sweep's slope needs its own.
            config = dict(base, **{variable: value})
            figures = spawn(config, args)
            label = "x".join(str(config[v]) for v in ("n", "c", "k", "d_k", "classes"))
            print(table.row(label, *[figures["seconds"][s] for s in STEPS],
                            max(figures["peak_gb"].values()))
                  + f"   (load {load_average(os.getloadavg()[:1], digits=1)})", flush=True)
            sweeps[variable].append({"value": value, **figures})
    loads["end"] = load_average()
    elapsed = time.perf_counter() - started
    record = {"base": base, "threads": args.n_jobs, "sgd_epochs": args.sgd_epochs,
              "loads": loads, "elapsed_s": elapsed, "sweeps": sweeps}
    record["slopes"] = slopes(sweeps)
    lines = report(record)
    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.output}.json").write_text(json.dumps(record, indent=1) + "\n")
    grid_used = ", ".join(f"{v}: {[p['value'] for p in sweeps[v]]}" for v in sweeps)
    header = [f"$ python benchmarks/scaling.py {' '.join(sys.argv[1:])}".rstrip(),
              f"grid: {grid_used}"]
    (RESULTS / f"{args.output}.txt").write_text("\n".join(header + lines) + "\n")
    return record


def slopes(sweeps):
    """Per sweep and step: the log-log slope of seconds and of peak GB above the baseline."""
    out = {}
    for variable, points in sweeps.items():
        xs = [p["value"] for p in points]
        out[variable] = {
            step: {
                "time": slope(xs, [p["seconds"][step] for p in points]),
                "memory": slope(xs, [p["peak_gb"][step] - p["baseline_gb"] for p in points]),
            }
            for step in STEPS
        }
    return out


def report(record):
    """The text report: per sweep, seconds and peak GB per step, and the slopes."""
    base = "x".join(str(v) for v in record["base"].values())
    first = (
        f"base N x C x K x d_k x classes: {base}; {record['threads']} torch thread(s); "
        f"load average at start {record['loads']['start']}, at end {record['loads']['end']}; "
        f"{record['elapsed_s']:.0f} s in all"
    )
    lines = [first]
    for variable, points in record["sweeps"].items():
        lines.append("")
        lines.append(f"sweep of {VARIABLES[variable]}: seconds / peak GB of the process per step")
        table = Table([(VARIABLES[variable], 14, "d"), ("base GB", 8, ".2f")]
                      + [(name, 16, "") for name in STEPS])
        lines.append(table.header())
        for p in points:
            cells = [f"{p['seconds'][s]:.3f} / {p['peak_gb'][s]:.2f}" for s in STEPS]
            lines.append(table.row(p["value"], p["baseline_gb"], *cells))
        fits = record["slopes"][variable]

        def fmt(value):
            return "  -  " if value is None else f"{value:5.2f}"

        lines.append(table.row("slope time", None,
                               *[fmt(fits[s]["time"]) for s in STEPS]))
        lines.append(table.row("slope memory", None,
                               *[fmt(fits[s]["memory"]) for s in STEPS]))
    lines.append("")
    lines.append("slope: least-squares slope of log(value) on log(variable); memory: peak GB "
                 "above the process's baseline (interpreter, libraries, data).")
    return lines


# -------------------------------------------------------------------- plot


def plot(record, path):
    """Seconds (top) and peak GB above the baseline (bottom) against each variable."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweeps = record["sweeps"]
    fig, axes = plt.subplots(2, len(sweeps), figsize=(3.2 * len(sweeps), 5.6), squeeze=False)
    for column, (variable, points) in enumerate(sweeps.items()):
        xs = [p["value"] for p in points]
        for step, label in STEPS.items():
            fit = record["slopes"][variable][step]
            axes[0, column].plot(xs, [p["seconds"][step] for p in points], marker="o",
                                 label=f"{label} ({fit['time']:.2f})")
            growth = [max(p["peak_gb"][step] - p["baseline_gb"], 1e-3) for p in points]
            axes[1, column].plot(xs, growth, marker="o", label=label)
        for row, ylabel in enumerate(("seconds", "peak GB above baseline")):
            ax = axes[row, column]
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel(VARIABLES[variable])
            ax.grid(True, which="major", alpha=0.3)
            if column == 0:
                ax.set_ylabel(ylabel)
        axes[0, column].legend(fontsize=6, title="step (slope)", title_fontsize=6)
    base = "x".join(str(v) for v in record["base"].values())
    fig.suptitle(f"cost per step around N x C x K x d_k x classes = {base} "
                 f"(load {record['loads']['start']})", fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main(argv=None):
    parser = make_parser(__doc__)
    parser.add_argument("--base", default=BASE, help="N x C x K x d_k x classes")
    parser.add_argument("--sweeps", type=comma_list(str), default=list(VARIABLES),
                        help="comma-separated, of n, c, k, classes")
    parser.add_argument("--full", action="store_true", help="every grid point; N up to 200k")
    parser.add_argument("--n-values", type=comma_list(int), default=None)
    parser.add_argument("--c-values", type=comma_list(int), default=None)
    parser.add_argument("--k-values", type=comma_list(int), default=None)
    parser.add_argument("--class-values", type=comma_list(int), default=None)
    parser.add_argument("--sgd-epochs", type=int, default=3)
    parser.add_argument("--n-jobs", type=int, default=1, help="torch threads per step")
    parser.add_argument("--output", default="scaling", help="name of the result files")
    parser.add_argument("--plot", default=None,
                        help="draw the result JSON into this PNG instead of measuring")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # a worker's config
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(run_child(json.loads(args.child), args.sgd_epochs, args.n_jobs)))
        return None
    if args.plot is not None:
        record = json.loads((RESULTS / f"{args.output}.json").read_text())
        return plot(record, args.plot)
    unknown = set(args.sweeps) - set(VARIABLES)
    if unknown:
        parser.error(f"--sweeps: unknown {sorted(unknown)}; choose from {list(VARIABLES)}")
    return measure(args)


if __name__ == "__main__":
    main()
