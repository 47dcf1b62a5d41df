"""Speed and memory of skkvb against lucidrains' DKVB package, same data, same configuration.

Runs both implementations on the same synthetic embeddings (the generator
that bench_engine.py uses, ``_common.synthetic_embeddings``) and prints, per
step, the seconds of each, their ratio and the peak resident memory of each
during that step:

* one EMA key-fitting epoch (values untouched),
* one value-training epoch (keys frozen; SGD on the values only, batch 256),
* prediction over all samples (batches of 256 for the reference).

    python benchmarks/compare_reference.py [--config small|paper|both] [--threads 2]
                                           [--n-samples N] [--value-epochs 1]

``paper`` is N=10,000, D=512, C=256 codebooks, K=4096 keys, d_k=14, d_v=10,
batch 256 (the paper's configuration, the one bench_engine.py measures; the
reference takes minutes and several GB of memory on it); ``small`` is N=2,000,
D=64, C=16, K=256, d_k=8, d_v=10 (seconds). Both implementations use the same
number of torch threads.

The reference is the PyPI package ``discrete-key-value-bottleneck-pytorch``
(with its dependency ``vector-quantize-pytorch``). This script installs
nothing: when the package is missing it says how to install it and exits with
status 2 without measuring anything (``bench_engine.py`` measures skkvb alone).

Each implementation runs in its own fresh Python process (this script
re-invoked with a hidden ``--worker`` flag), one after the other, so that the
peak memories are independent. The per-step peak is the child's ``VmHWM``
(Linux), reset just before the step (``/proc/self/clear_refs``), so it is the
resident peak of the process *during* that step, including what the process
already held (imports, data, model). The process peak is the highest
``VmHWM`` of the child's whole life: the child keeps it across those resets
(they reset the kernel's ``ru_maxrss`` too), and the parent takes the larger
of that and ``ru_maxrss`` from ``os.wait4``. The CPU seconds (all threads of
the process, ``time.process_time``) are printed too: on a shared machine they
move less with the load than wall seconds.

How the reference is configured to match the paper and skkvb:

* ``DiscreteKeyValueBottleneck(dim=d_k, dim_embed=D, num_memory_codebooks=C,
  num_memories=K, dim_memory=d_v)`` applied to the embeddings directly
  (no encoder), input shape (B, 1, D), mean-pooled values as logits.
* ``codebook_dim=d_k``: without it ``VectorQuantize(dim=C*d_k, heads=C)``
  takes ``codebook_dim = C*d_k`` per head and silently adds a learned
  ``Linear(C*d_k, C*C*d_k)`` in front of the codebooks (and one behind): 3.3
  billion parameters at the paper's size. The script asserts that it has none.
* The random projection buffer is replaced by skkvb's (Gaussian, unit-norm
  columns, drawn from ``RandomState(0)``), so both see identical heads; the
  package's own is Xavier-normal.
* EMA ``decay=0.95``; keys start at random heads of the first batch with EMA
  counts one (set by hand: the package starts at Kaiming-uniform noise, and its
  ``kmeans_init`` sets the counts of missed keys to zero); dead keys (EMA count
  below ``0.1 * batch / K``) are re-seeded at a head of the batch with count
  reset to one (``reset_cluster_size=1``, set on the codebook: VectorQuantize
  does not pass it through). ``commitment_weight=0``: no encoder to train.
* Values start at zero (the package: ``randn``). Value training: module in
  eval mode (no EMA update, keys frozen), ``torch.optim.SGD([values])`` with
  the same learning rate as skkvb (``learning_rate="auto"`` = C; the paper's
  0.3 changes nothing in the timing), no momentum, cross-entropy with label
  smoothing 0.1, batch 256, no gradient clipping (skkvb has none).
* Key fitting and prediction run under ``torch.no_grad()``.

skkvb is timed as in bench_engine.py: ``KeyCodebook(max_iter=1).fit`` for the
key epoch, ``transform`` for the codes, ``KeyValueBottleneckClassifier``
(``codebook=FrozenEstimator(codebook)``, ``value_update="sgd"``) whose verbose
log gives the seconds of each value epoch (codes computed once before the
epochs; the reference recomputes them at every step, so the whole ``fit``,
codes included, is printed as a second line), and ``predict``.
"""

import argparse
import contextlib
import importlib.util
import io
import json
import os
import shlex
import subprocess
import sys
import time
from unittest import mock

import numpy as np

# benchmarks/_common.py, next to this script; it imports neither skkvb nor torch,
# so the reference worker's memory is its own.
from _common import (
    Table,
    load_average,
    make_parser,
    median_epoch_seconds,
    peak_rss_gb,
    peak_rss_since_reset_gb,
    reset_peak_rss,
    synthetic_embeddings,
)

CONFIGS = {
    "small": dict(n_samples=2_000, n_features=64, n_codebooks=16, n_keys=256, key_dim=8,
                  n_classes=10),
    "paper": dict(n_samples=10_000, n_features=512, n_codebooks=256, n_keys=4096, key_dim=14,
                  n_classes=10),
}
REFERENCE_PACKAGES = {
    "discrete_key_value_bottleneck_pytorch": "discrete-key-value-bottleneck-pytorch",
    "vector_quantize_pytorch": "vector-quantize-pytorch",
}
INSTALL_HINT = "pip install discrete-key-value-bottleneck-pytorch==0.1.1"
DECAY = 0.95
DEAD_KEY_THRESHOLD = 0.1  # fraction of uniform usage, as in skkvb and the paper
LABEL_SMOOTHING = 0.1
# Target ratios (reference / ours) of issue 7, and ours / reference for memory.
TARGETS = {"key_epoch": 10.0, "value_epoch": 500.0, "peak": 1 / 3}


def gaussian_projection(n_features, n_codebooks, key_dim, seed=0):
    """skkvb's projection of ``KeyCodebook(random_state=seed)``: (D, C * d_k), unit-norm
    columns (the same draw as ``skkvb.engine.heads.make_projection``)."""
    matrix = np.random.RandomState(seed).standard_normal((n_features, n_codebooks * key_dim))
    matrix /= np.linalg.norm(matrix, axis=0, keepdims=True)
    return matrix.astype(np.float32)


def keys_used(codes, n_keys):
    """Fraction of all C * K keys that some sample's head is nearest to: (N, C) codes."""
    offsets = n_keys * np.arange(codes.shape[1])
    return np.unique(codes + offsets).size / (codes.shape[1] * n_keys)


# ------------------------------------------------------------- measuring


# Highest VmHWM seen before any reset: resetting VmHWM also resets what the
# kernel reports as ru_maxrss, so the process peak is kept here.
_PEAK_BEFORE_RESETS = [0.0]


def process_peak_gb():
    """This process's resident peak over its whole life so far, GB (None off Linux)."""
    current = peak_gb()
    return None if current is None else max(_PEAK_BEFORE_RESETS[0], current)


def reset_peak():
    """Reset this process's VmHWM (Linux >= 4.0); False where impossible."""
    current = peak_gb()
    if current is not None:
        _PEAK_BEFORE_RESETS[0] = max(_PEAK_BEFORE_RESETS[0], current)
    return reset_peak_rss()


def peak_gb():
    """This process's VmHWM in GB (2**30 bytes), None off Linux."""
    return peak_rss_since_reset_gb()


def measure(figures, name, fn):
    """Run ``fn``; store its seconds and the resident peak during it; return its result."""
    can_reset = reset_peak()
    start, cpu_start = time.perf_counter(), time.process_time()
    result = fn()
    figures[name] = time.perf_counter() - start
    figures[name + "_cpu"] = time.process_time() - cpu_start
    figures[name + "_peak"] = peak_gb() if can_reset else None
    return result


# --------------------------------------------------------------- workers


def run_ours(cfg, args):
    import torch
    from sklearn.base import clone
    from sklearn.frozen import FrozenEstimator

    from skkvb import KeyCodebook, KeyValueBottleneckClassifier

    torch.set_num_threads(args.threads)
    X, y = synthetic_embeddings(cfg["n_samples"], cfg["n_features"], cfg["n_classes"])
    figures = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    codebook = KeyCodebook(
        n_codebooks=cfg["n_codebooks"], n_keys=cfg["n_keys"], key_dim=cfg["key_dim"],
        decay=DECAY, max_iter=1, batch_size=args.batch_size,
        dead_key_threshold=DEAD_KEY_THRESHOLD, device="cpu", random_state=0,
        n_jobs=args.threads,  # n_jobs=None would be one thread, whatever torch's setting
    )
    measure(figures, "key_epoch", lambda: codebook.fit(X))
    codes = measure(figures, "encode", lambda: codebook.transform(X))
    figures["keys_used"] = keys_used(codes, cfg["n_keys"])
    clf = KeyValueBottleneckClassifier(
        codebook=FrozenEstimator(codebook), learning_rate=float(cfg["n_codebooks"]),
        max_iter=args.value_epochs, batch_size=args.batch_size,
        label_smoothing=LABEL_SMOOTHING, device="cpu", random_state=0, verbose=1,
        value_update="sgd", n_jobs=args.threads,
    )
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        measure(figures, "value_fit", lambda: clf.fit(X, y))
    figures["value_epoch"] = median_epoch_seconds(log.getvalue(), args.value_epochs)
    figures["value_epoch_peak"] = figures["value_fit_peak"]
    # The same fit again, its epoch log clocked in CPU seconds (all threads).
    log = io.StringIO()
    with contextlib.redirect_stdout(log), mock.patch.object(
        time, "perf_counter", time.process_time
    ):
        clone(clf).fit(X, y)
    figures["value_epoch_cpu"] = median_epoch_seconds(log.getvalue(), args.value_epochs)
    predictions = measure(figures, "predict", lambda: clf.predict(X))
    figures["accuracy"] = float(np.mean(predictions == y))
    return figures


def run_reference(cfg, args):
    from importlib.metadata import version

    import torch
    import torch.nn.functional as F
    from discrete_key_value_bottleneck_pytorch import DiscreteKeyValueBottleneck

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    X, y = synthetic_embeddings(cfg["n_samples"], cfg["n_features"], cfg["n_classes"])
    X, y = torch.from_numpy(X), torch.from_numpy(y).long()
    n_samples, batch = cfg["n_samples"], args.batch_size
    n_codebooks, n_keys, key_dim = cfg["n_codebooks"], cfg["n_keys"], cfg["key_dim"]
    figures = {
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "versions": {pip_name: version(pip_name) for pip_name in REFERENCE_PACKAGES.values()},
    }
    model = DiscreteKeyValueBottleneck(
        dim=key_dim, dim_embed=cfg["n_features"], num_memory_codebooks=n_codebooks,
        num_memories=n_keys, dim_memory=cfg["n_classes"], average_pool_memories=True,
        codebook_dim=key_dim,  # else a Linear(C*d_k, C*C*d_k) is added before the keys
        decay=DECAY, threshold_ema_dead_code=DEAD_KEY_THRESHOLD * batch / n_keys,
        commitment_weight=0.0,
    )
    assert isinstance(model.vq.project_in, torch.nn.Identity), "projection layer added"
    codebook = model.vq._codebook
    codebook.reset_cluster_size = 1.0  # a revived key restarts with EMA count one, as ours
    projection = gaussian_projection(cfg["n_features"], n_codebooks, key_dim)
    with torch.no_grad():
        model.rand_proj.copy_(
            torch.from_numpy(projection).view(-1, n_codebooks, key_dim).permute(1, 0, 2)
        )
        model.values.zero_()
    figures["n_parameters"] = sum(p.numel() for p in model.parameters())

    def start_keys(first_batch):
        """Keys at random heads of the first batch, EMA counts one (as the paper, ours)."""
        heads = torch.einsum("bnd,cde->bnce", first_batch, model.rand_proj)[:, 0]  # (B, C, d_k)
        rows = torch.randint(heads.shape[0], (n_codebooks, n_keys))
        keys = heads[rows, torch.arange(n_codebooks).unsqueeze(1)]
        codebook.embed.copy_(keys)
        codebook.embed_avg.copy_(keys)
        codebook.cluster_size.fill_(1.0)

    def batches(order):
        for start in range(0, n_samples, batch):
            rows = order[start : start + batch]
            yield X[rows].unsqueeze(1), y[rows]  # (B, 1, D): one "token" per sample

    rng = np.random.RandomState(0)

    @torch.no_grad()
    def key_epoch():
        model.train()
        for step, (xb, _) in enumerate(batches(torch.from_numpy(rng.permutation(n_samples)))):
            if step == 0:
                start_keys(xb)
            model(xb)  # EMA update of the keys in train mode; values unused

    optimizer = torch.optim.SGD([model.values], lr=float(n_codebooks))

    def value_epoch():
        model.eval()  # keys frozen: no EMA update
        for xb, yb in batches(torch.from_numpy(rng.permutation(n_samples))):
            logits = model(xb)[:, 0]
            loss = F.cross_entropy(logits, yb, label_smoothing=LABEL_SMOOTHING)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    @torch.no_grad()
    def predict():
        model.eval()
        predictions, codes = [], []
        for xb, _ in batches(torch.arange(n_samples)):
            memories, (_, indices, _) = model(xb, return_intermediates=True)
            predictions.append(memories[:, 0].argmax(1))
            codes.append(indices[:, 0])  # (B, C) nearest key per codebook
        return torch.cat(predictions), torch.cat(codes)

    measure(figures, "key_epoch", key_epoch)
    seconds, cpu_seconds, peaks = [], [], []
    for _ in range(args.value_epochs):
        measure(figures, "value_epoch", value_epoch)
        seconds.append(figures["value_epoch"])
        cpu_seconds.append(figures["value_epoch_cpu"])
        peaks.append(figures["value_epoch_peak"])
    figures["value_epoch"] = float(np.median(seconds))
    figures["value_epoch_cpu"] = float(np.median(cpu_seconds))
    figures["value_epoch_peak"] = None if None in peaks else max(peaks)
    # Codes are recomputed at every step: the value epochs are the whole fit.
    figures["value_fit"] = float(np.sum(seconds))
    figures["value_fit_cpu"] = float(np.sum(cpu_seconds))
    figures["value_fit_peak"] = figures["value_epoch_peak"]
    predictions, codes = measure(figures, "predict", predict)
    figures["accuracy"] = float((predictions == y).float().mean())
    figures["keys_used"] = keys_used(codes.numpy(), n_keys)
    return figures


WORKERS = {"ours": run_ours, "reference": run_reference}


def spawn(which, cfg, args):
    """Run one worker in a fresh process; its figures plus its peak RSS from wait4."""
    command = [
        sys.executable, os.path.abspath(__file__), "--worker", which,
        "--worker-config", json.dumps(cfg), "--threads", str(args.threads),
        "--value-epochs", str(args.value_epochs), "--batch-size", str(args.batch_size),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    output = process.stdout.read()
    process.stdout.close()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{which} worker failed with status {process.returncode}:\n{output}")
    figures = json.loads(output.strip().splitlines()[-1])
    # ru_maxrss (KiB on Linux) counts only since the last VmHWM reset; the child
    # reports the peak across its resets.
    figures["process_peak"] = max(peak_rss_gb(usage), figures["process_peak_self"] or 0.0)
    return figures


# ---------------------------------------------------------------- report


TABLE = Table(
    [("step", 44, ""), ("ours s", 9, ".3f"), ("ref s", 10, ".3f"), ("ratio", 10, "")]
    + [("target", 9, ""), ("ours GB", 9, ".2f"), ("ref GB", 9, ".2f")],
    missing="—",
)


def ratio_cell(mine, theirs):
    """``theirs / mine`` as ``12.3x``; None (printed "—") where either is missing."""
    return None if mine is None or theirs is None else f"{theirs / mine:.1f}x"


def print_config(name, cfg, args, ours, ref, loads):
    n = cfg["n_samples"]
    print(
        f"\n== config {name}: N={n} D={cfg['n_features']} C={cfg['n_codebooks']} "
        f"K={cfg['n_keys']} d_k={cfg['key_dim']} d_v={cfg['n_classes']} "
        f"batch={args.batch_size} value_epochs={args.value_epochs} device=cpu "
        f"threads={ours['threads']}/{ref['threads']} (ours/reference)"
    )
    print(f"   reference trainable parameters: {ref['n_parameters']:,} (values only: no projection layer)")
    print(f"   load average before {loads[0]}, after {loads[1]}")
    header = TABLE.header()
    print(header)
    print("-" * len(header))
    rows = [
        ("EMA key-fitting epoch", "key_epoch", TARGETS["key_epoch"]),
        (f"codes for {n} samples (once; ours only)", "encode", None),
        ("value-training epoch (codes cached)", "value_epoch", TARGETS["value_epoch"]),
        ("value training incl. codes (whole fit)", "value_fit", None),
        (f"predict {n} samples", "predict", None),
    ]
    for label, key, target in rows:
        mine, theirs = ours.get(key), ref.get(key)
        print(
            TABLE.row(
                label, mine, theirs, ratio_cell(mine, theirs),
                "" if target is None else f">={target:g}x",
                ours.get(key + "_peak"), ref.get(key + "_peak"),
            )
        )
    print("CPU seconds (all threads of the process), same steps:")
    for label, key, _ in rows:
        mine, theirs = ours.get(key + "_cpu"), ref.get(key + "_cpu")
        print(TABLE.row("  " + label, mine, theirs, ratio_cell(mine, theirs)))
    share = ours["process_peak"] / ref["process_peak"]
    print(
        TABLE.row(
            "process peak RSS, GB (ours, ref, ours/ref)", f"{ours['process_peak']:.2f}",
            f"{ref['process_peak']:.2f}", f"{share:.3f}x", "<=0.333x",
        )
    )
    print(
        TABLE.row(
            f"training accuracy after {args.value_epochs} value epoch(s)",
            f"{ours['accuracy']:.4f}", f"{ref['accuracy']:.4f}",
        )
    )
    print(
        TABLE.row(
            "keys nearest to some sample (% of C*K)",
            f"{100 * ours['keys_used']:.1f}", f"{100 * ref['keys_used']:.1f}",
        )
    )
    ok = {
        "key epoch": ref["key_epoch"] / ours["key_epoch"] >= TARGETS["key_epoch"],
        "value epoch": ref["value_epoch"] / ours["value_epoch"] >= TARGETS["value_epoch"],
        "memory": share <= TARGETS["peak"],
    }
    verdict = ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in ok.items())
    if name != "paper" or cfg != CONFIGS["paper"]:
        verdict += " (the targets are set for the paper configuration)"
    print("   targets: " + verdict)


def missing_reference():
    return [pip for module, pip in REFERENCE_PACKAGES.items()
            if importlib.util.find_spec(module) is None]


def main(argv=None):
    parser = make_parser(__doc__)
    parser.add_argument("--config", choices=["small", "paper", "both"], default="both")
    parser.add_argument("--n-samples", type=int, default=None,
                        help="override N of every configuration")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, both sides")
    parser.add_argument("--value-epochs", type=int, default=1,
                        help="value epochs per implementation (median printed)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--worker-config", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        figures = WORKERS[args.worker](json.loads(args.worker_config), args)
        figures["process_peak_self"] = process_peak_gb()
        print(json.dumps(figures), flush=True)
        return 0

    missing = missing_reference()
    if missing:
        print(
            f"The reference implementation is not installed (missing: {', '.join(missing)}).\n"
            f"Install it into this environment with\n    {INSTALL_HINT}\n"
            "and run this script again. (It is not a dependency of skkvb; "
            "benchmarks/bench_engine.py measures skkvb alone.)",
            file=sys.stderr,
        )
        return 2

    print("$ " + shlex.join([os.path.relpath(sys.argv[0])] + sys.argv[1:]))
    names = ["small", "paper"] if args.config == "both" else [args.config]
    for name in names:
        cfg = dict(CONFIGS[name])
        if args.n_samples is not None:
            cfg["n_samples"] = args.n_samples
        before = os.getloadavg()
        ours = spawn("ours", cfg, args)
        ref = spawn("reference", cfg, args)
        after = os.getloadavg()
        loads = [load_average(load, sep=" ") for load in (before, after)]
        if name == names[0]:
            versions = ", ".join(f"{k} {v}" for k, v in ref["versions"].items())
            print(f"torch {ours['torch']}; reference: {versions}")
        print_config(name, cfg, args, ours, ref, loads)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
