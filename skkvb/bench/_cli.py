"""The ``skkvb-bench`` command: DKVB against its peers, i.i.d. and class-incremental."""

import argparse
import contextlib
import os
import platform
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import sklearn
from sklearn.preprocessing import StandardScaler, normalize

from .. import __version__
from .._progress import progress_bar, write
from ..streams import ClassIncrementalSplit, IIDSplit, make_phases
from ._datasets import DATASETS, load_dataset
from ._encoders import ENCODERS, embed
from ._methods import make_methods
from ._report import format_table, plot_curves, summarise, write_json
from ._runner import run_stream

__all__ = ["main", "run_benchmark", "build_parser", "UsageError"]


class UsageError(Exception):
    """A problem with the command line or the data it names, shown without a traceback."""


DESCRIPTION = """\
Class-incremental benchmark of the Discrete Key-Value Bottleneck (DKVB) against
streaming peers (SLDA, NCM, RanPAC-style ridge) and forgetting baselines (SGD
linear probe, MLP). Each method is trained i.i.d. (one phase) and
class-incrementally (phases of disjoint classes, no replay), the same number of
epochs over every sample, and evaluated on the full test set. Prints a table
(mean ± std over seeds), writes JSON and a PNG of the learning curves.
"""

SCALINGS = ("none", "standard", "l2")

EPILOG = """\
examples:
  skkvb-bench                                   # digits, raw pixels, unscaled
  skkvb-bench --dataset toy --methods dkvb,dkvb-400,sgd,mlp
  skkvb-bench --dataset fashion-mnist --encoder efficientnet-lite0 --key-data mnist
  skkvb-bench --dataset my_data.npz --phases 3 --epochs 20 --seeds 0,1
"""


def _default_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "skkvb", "bench")


def _seeds(text):
    """``N`` means seeds 0..N-1; a comma-separated list gives them explicitly."""
    try:
        if "," in text:
            seeds = [int(part) for part in text.split(",") if part.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        seeds = []
    if not seeds:  # "0" would be no seed at all, and no result to report
        raise argparse.ArgumentTypeError(
            f"seeds must be N >= 1 or a list like 0,1,2; got {text!r}"
        )
    return seeds


def _shape(text):
    try:
        n_codebooks, n_keys, key_dim = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CxKxD such as 64x128x8; got {text!r}") from None
    return n_codebooks, n_keys, key_dim


def _non_negative(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or a positive integer, got {text!r}")
    return value


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser():
    """The argument parser of ``skkvb-bench``.

    Returns
    -------
    parser : argparse.ArgumentParser
        Parses the options that ``skkvb-bench --help`` lists.

    Examples
    --------
    >>> from skkvb.bench import build_parser
    >>> args = build_parser().parse_args(["--dataset", "toy", "--seeds", "0,2"])
    >>> args.dataset, args.seeds
    ('toy', [0, 2])
    """
    parser = argparse.ArgumentParser(
        prog="skkvb-bench",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--dataset",
        default="digits",
        help=f"one of {', '.join(DATASETS)}, or a .npz with X and y (default: digits)",
    )
    add("--data-dir", default=None, help="where to look for dataset files first")
    add(
        "--encoder",
        default="raw",
        help=f"'raw' (the inputs as they are) or a frozen encoder: {', '.join(ENCODERS)}",
    )
    add(
        "--scaling",
        choices=SCALINGS,
        default="none",
        help="feature scaling before every method: 'none' (default; what a stream has), "
        "'standard' (StandardScaler fitted on all training inputs, which a stream does "
        "not have; key data scaled with the same statistics) or 'l2' (each row to unit "
        "norm, no statistics)",
    )
    add(
        "--key-data",
        default="auto",
        help="unlabelled data the DKVB keys are fitted on: 'auto' (the dataset's own "
        "unlabelled set if it has one, else the training inputs), 'train', or "
        "another dataset name / .npz (the paper's protocol)",
    )
    add(
        "--phases",
        type=_positive,
        default=None,
        help="class-incremental phases (default: 4 for the toy, else 5)",
    )
    add(
        "--epochs",
        type=_positive,
        default=None,
        help="epochs per phase, and of the i.i.d. run (default: dataset's)",
    )
    add(
        "--eval-every",
        type=_positive,
        default=None,
        help="evaluate every N epochs (default: 5 points per phase)",
    )
    add(
        "--methods",
        default=None,
        help="comma-separated methods (default: all; see the table for names)",
    )
    add(
        "--seeds",
        type=_seeds,
        default=_seeds("3"),
        help="N for seeds 0..N-1, or a list 0,1,2 (default: 3)",
    )
    add("--out", default="skkvb-bench-results", help="folder for the JSON and PNG")
    add("--cache-dir", default=_default_cache_dir(), help="embedding cache (joblib.Memory)")
    add("--no-cache", action="store_true", help="do not cache embeddings")
    add("--max-train", type=_positive, default=None, help="subsample the training set")
    add("--max-test", type=_positive, default=None, help="subsample the test set")
    add(
        "--known-classes",
        action="store_true",
        help="give every method all classes upfront (default: label sets grow)",
    )
    add(
        "--dkvb-shape",
        type=_shape,
        default=None,
        help="DKVB codebooks x keys x key_dim, e.g. 256x4096x14 (default: by input size)",
    )
    add("--device", default="auto", help="torch device of DKVB and the encoder")
    add(
        "--threads",
        type=_non_negative,
        default=1,
        help="CPU threads of torch and BLAS during the run, and DKVB's n_jobs; 0 keeps "
        "the libraries' defaults (default: 1 -- the benchmark's many small steps run fastest on "
        "one thread, and several threads waiting on each other slow down badly on "
        "a busy shared machine)",
    )
    add("--quiet", action="store_true", help="no progress on stderr")
    add("--verbose", action="store_true", help="progress at every evaluation, too")
    add("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


class _Log:
    def __init__(self, quiet):
        self.quiet = quiet
        self.start = time.perf_counter()

    def __call__(self, message):
        if not self.quiet:
            elapsed = time.perf_counter() - self.start
            write(f"[{elapsed:6.1f}s] {message}", file=sys.stderr)


def _embed_all(args, dataset, memory, log):
    """Embeddings of train, test and key data, scaled as ``--scaling`` says
    (not at all by default), and where the key data came from."""

    def encode(X, image_shape, what):
        if args.encoder != "raw":
            log(f"embedding {what} ({len(X)} samples) with {args.encoder}")
        return embed(
            args.encoder,
            X,
            image_shape,
            memory=memory,
            device=args.device,
            verbose=int(not args.quiet and args.encoder != "raw"),
        )

    Z_train = encode(dataset.X_train, dataset.image_shape, "training set")
    Z_test = encode(dataset.X_test, dataset.image_shape, "test set")
    if args.key_data == "train" or (args.key_data == "auto" and dataset.X_unlabelled is None):
        Z_key, key_source = Z_train, "training inputs"
    elif args.key_data == "auto":
        Z_key = encode(dataset.X_unlabelled, dataset.image_shape, "unlabelled set")
        key_source = f"{dataset.name} unlabelled set"
    else:
        other = load_dataset(args.key_data, args.data_dir, max_train=args.max_train)
        Z_key = encode(other.X_train, other.image_shape, f"key data ({other.name})")
        key_source = f"{other.name} training inputs"
        if Z_key.shape[1] != Z_train.shape[1]:
            raise ValueError(
                f"key data {other.name} has {Z_key.shape[1]} features after encoding, "
                f"the dataset {Z_train.shape[1]}: use an encoder that maps both to one space."
            )
    transform = _scaling(args.scaling, Z_train)
    return transform(Z_train), transform(Z_test), transform(Z_key), key_source


def _scaling(kind, Z_train):
    """The feature map every method gets: identity, standardisation with the
    training inputs' statistics, or rows scaled to unit L2 norm."""
    if kind == "standard":
        scaler = StandardScaler().fit(Z_train)
        return lambda Z: scaler.transform(Z).astype(np.float32)
    if kind == "l2":
        return lambda Z: normalize(Z).astype(np.float32)
    return lambda Z: np.asarray(Z, dtype=np.float32)


def _select_methods(args, n_features):
    methods = make_methods(
        n_features, dkvb_shape=args.dkvb_shape, device=args.device, n_jobs=args.threads or None
    )
    if args.methods is None:
        return methods
    names = [name.strip() for name in args.methods.split(",") if name.strip()]
    unknown = [name for name in names if name not in methods]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; available here: {', '.join(methods)}")
    return {name: methods[name] for name in names}


def _environment():
    info = {
        "skkvb": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "cpu_count": os.cpu_count(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    try:
        import resource

        info["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    except ImportError:  # pragma: no cover - not on Windows
        pass
    return info


def _progress(log, seed, name, setting):
    def on_eval(point):
        log(
            f"seed {seed}  {name:<10} {setting}: phase {point['phase']}, epoch "
            f"{point['epoch']}, accuracy {point['accuracy']:.3f}"
        )

    return on_eval


@contextlib.contextmanager
def _limit_threads(n_threads):
    """Cap torch's and the BLAS libraries' threads for the run, then restore them."""
    if not n_threads:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        with threadpool_limits(n_threads):
            yield
    finally:
        torch.set_num_threads(before)


def _prepare(args, log):
    """Dataset, embeddings (scaled as ``--scaling`` says) and methods; a bad
    argument is a UsageError."""
    try:
        dataset = load_dataset(args.dataset, args.data_dir, args.max_train, args.max_test)
        phases = args.phases or dataset.default_phases
        ClassIncrementalSplit(phases, class_order=dataset.class_order).phase_classes(
            dataset.y_train
        )
        epochs = args.epochs or dataset.default_epochs
        described = dataset.describe()
        log(
            f"{dataset.name}: {described['n_train']} train, {described['n_test']} test, "
            f"{described['n_features']} features, {described['n_classes']} classes; encoder "
            f"{args.encoder}; {phases} phases x {epochs} epochs; seeds {args.seeds}"
        )
        memory = None if args.no_cache else joblib.Memory(args.cache_dir, verbose=0)
        embedded = _embed_all(args, dataset, memory, log)
        methods = _select_methods(args, embedded[0].shape[1])
    except (FileNotFoundError, ImportError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    return dataset, phases, epochs, embedded, methods


def _run_method(args, method, seed, streams, Z_key, Z_test, y_test, schedule, log):
    """Both settings of one method for one seed, sharing its set-up (keys)."""
    start = time.perf_counter()
    make_estimator = method.build(seed, Z_key)
    run = {"seed": seed, "setup_time": time.perf_counter() - start}
    for setting, stream in streams.items():
        on_eval = _progress(log, seed, method.name, setting) if args.verbose else None
        run[setting] = run_stream(
            make_estimator(),
            stream,
            Z_test,
            y_test,
            single_pass=method.single_pass,
            on_eval=on_eval,
            **schedule,
        )
    log(
        f"seed {seed}  {method.name:<10} i.i.d. {run['iid']['accuracy']:.3f}  class-incr. "
        f"{run['class_incremental']['accuracy']:.3f}  ({time.perf_counter() - start:.1f} s)"
    )
    return run


def run_benchmark(args, log=None):
    """Run the benchmark that ``args`` (parsed by :func:`build_parser`) describes.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed command line of ``skkvb-bench``.
    log : callable, default=None
        Progress printer; ``None`` is silent.

    Returns
    -------
    record : dict
        Configuration, dataset, environment, per-seed runs and the summary.

    Examples
    --------
    >>> from skkvb.bench import build_parser, run_benchmark
    >>> args = build_parser().parse_args(
    ...     ["--dataset", "toy", "--methods", "ncm", "--seeds", "1", "--no-cache"]
    ... )
    >>> record = run_benchmark(args)
    >>> sorted(record["summary"])
    ['ncm']
    """
    log = log or _Log(quiet=True)
    dataset, phases, epochs, embedded, methods = _prepare(args, log)
    Z_train, Z_test, Z_key, key_source = embedded
    schedule = {
        "epochs": epochs,
        "eval_every": args.eval_every or max(1, epochs // 5),
        "classes": np.unique(dataset.y_train) if args.known_classes else None,
    }
    runs = {name: [] for name in methods}
    class_orders = {}
    bar = progress_bar(
        len(args.seeds) * len(methods), "runs", "run", verbose=not getattr(log, "quiet", True)
    )
    for seed in args.seeds:
        splitter = ClassIncrementalSplit(phases, class_order=dataset.class_order, random_state=seed)
        class_orders[seed] = [group.tolist() for group in splitter.phase_classes(dataset.y_train)]
        streams = {
            "iid": make_phases(Z_train, dataset.y_train, IIDSplit(1, random_state=seed)),
            "class_incremental": make_phases(Z_train, dataset.y_train, splitter),
        }
        for name, method in methods.items():
            bar.set_postfix_str(f"seed {seed}, {name}", refresh=False)
            runs[name].append(
                _run_method(
                    args, method, seed, streams, Z_key, Z_test, dataset.y_test, schedule, log
                )
            )
            bar.update()
    bar.close()
    return {
        "config": {
            **vars(args),
            "phases": phases,
            "epochs": epochs,
            "eval_every": schedule["eval_every"],
            "key_data_source": key_source,
        },
        "dataset": dataset.describe(),
        "environment": _environment(),
        "methods": {name: method.description for name, method in methods.items()},
        "single_pass": [name for name, method in methods.items() if method.single_pass],
        "class_orders": class_orders,
        "summary": summarise(runs),
        "runs": runs,
    }


def _write_outputs(args, record, log):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{record['dataset']['name']}-{args.encoder}"
    json_path, png_path = out / f"{stem}.json", out / f"{stem}.png"
    write_json(json_path, record)
    config = record["config"]
    title = (
        f"{record['dataset']['name']} ({args.encoder}): {config['phases']} phases x "
        f"{config['epochs']} epochs, {len(args.seeds)} seed(s)"
    )
    plot_curves(png_path, record["runs"], title=title, dashed=record["single_pass"])
    log(f"wrote {json_path} and {png_path}")
    return json_path, png_path


def main(argv=None):
    """Entry point of ``skkvb-bench`` and ``python -m skkvb.bench``.

    Parameters
    ----------
    argv : list of str, default=None
        Command-line arguments; ``None`` reads ``sys.argv``.

    Examples
    --------
    >>> import tempfile
    >>> from skkvb.bench import main
    >>> with tempfile.TemporaryDirectory() as out:
    ...     main(["--dataset", "toy", "--methods", "ncm", "--seeds", "1",
    ...           "--quiet", "--no-cache", "--out", out])
    method ...
    ...
    ncm ...
    ...
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    log = _Log(args.quiet)
    try:
        with _limit_threads(args.threads):
            record = run_benchmark(args, log)
    except UsageError as exc:
        parser.exit(2, f"skkvb-bench: error: {exc}\n")
    record["wall_time"] = time.perf_counter() - log.start
    print(format_table(record["summary"]))
    print(
        f"time: key fitting + class-incremental training, per seed; accuracy on the full "
        f"test set; {len(args.seeds)} seed(s), wall time {record['wall_time']:.0f} s"
    )
    _write_outputs(args, record, log)
    return 0
