"""What the benchmark scripts share.

- command lines: :func:`make_parser`, the argument types :func:`parse_shape`
  (``64x4096x32``) and :func:`comma_list` (``1,2,4``);
- measuring: :func:`timed`, :func:`median_epoch_seconds` (the epoch seconds of
  a verbose ``KeyValueBottleneckClassifier`` log), :func:`peak_rss_gb` and
  :func:`load_average` (other jobs on the machine slow every figure);
- data: :func:`synthetic_embeddings` (a Gaussian cluster per class),
  :func:`load_embeddings` (a benchmark dataset through a frozen encoder, from
  ``skkvb-bench``'s embedding cache) and :func:`normalise` (the feature
  scalings of the "Accuracy" page of the docs);
- output: :class:`Table`, fixed-width text tables.

Scripts in ``benchmarks/`` import it as ``from _common import ...``: Python
puts the folder of the script it runs first on ``sys.path``. Scripts in
``benchmarks/explorations/`` put the parent folder there first (see their
README.md).

Only the standard library and numpy are imported here at module level: the
reference worker of ``compare_reference.py`` uses this module, and its memory
is measured without skkvb, scikit-learn or joblib loaded.
"""

import argparse
import os
import re
import resource
import sys
import time

import numpy as np

__all__ = [
    "Table",
    "add_data_arguments",
    "comma_list",
    "embedded_data",
    "embedding_cache",
    "load_average",
    "load_embeddings",
    "make_parser",
    "median_epoch_seconds",
    "normalise",
    "parse_shape",
    "peak_rss_gb",
    "synthetic_embeddings",
    "timed",
]

# ----------------------------------------------------------- command lines


def make_parser(doc):
    """An argument parser described by the first line of a script's docstring."""
    return argparse.ArgumentParser(description=doc.splitlines()[0])


def parse_shape(text):
    """``CxKxD`` such as ``64x4096x32`` -> ``(n_codebooks, n_keys, key_dim)``; an argparse type."""
    try:
        n_codebooks, n_keys, key_dim = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected CxKxD such as 64x4096x32; got {text!r}"
        ) from None
    return n_codebooks, n_keys, key_dim


def comma_list(kind):
    """An argparse type: ``"a,b,c"`` -> ``[kind("a"), kind("b"), kind("c")]``."""

    def parse(text):
        return [kind(part) for part in text.split(",") if part.strip()]

    parse.__name__ = f"comma-separated {getattr(kind, '__name__', 'value')}"  # for argparse errors
    return parse


# --------------------------------------------------------------- measuring


def timed(fn, *args, **kwargs):
    """``(seconds, result)`` of calling ``fn(*args, **kwargs)``, on the wall clock."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def median_epoch_seconds(log, n_epochs):
    """Median of the epoch seconds that a ``verbose=1`` KeyValueBottleneckClassifier
    printed (``loss ..., <seconds> s`` per epoch); ``log`` is its text."""
    seconds = [float(s) for s in re.findall(r"loss [\d.]+, ([\d.]+) s", log)]
    assert len(seconds) == n_epochs, log
    return float(np.median(seconds))


def peak_rss_gb(usage=None):
    """Peak resident memory in GB (2**30 bytes): of this process, or of the
    ``resource`` usage given (e.g. a child's, from ``os.wait4``)."""
    if usage is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_maxrss / 2**20  # KiB on Linux


def reset_peak_rss():
    """Reset this process's peak resident memory (VmHWM, Linux >= 4.0), so that
    :func:`peak_rss_since_reset_gb` measures from here; False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_since_reset_gb():
    """This process's VmHWM (peak since the last :func:`reset_peak_rss`) in GB
    (2**30 bytes); None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


class Tee:
    """A text stream that writes to stdout and to ``file`` (a result file)."""

    def __init__(self, file):
        self.file = file

    def write(self, text):
        sys.__stdout__.write(text)
        self.file.write(text)

    def flush(self):
        sys.__stdout__.flush()
        self.file.flush()


def load_average(loads=None, digits=2, sep=", "):
    """The load averages (default: the 1-, 5- and 15-minute ones now), formatted."""
    loads = os.getloadavg() if loads is None else loads
    return sep.join(f"{load:.{digits}f}" for load in loads)


# -------------------------------------------------------------------- data


def synthetic_embeddings(n_samples, n_features, n_classes, seed=0):
    """A Gaussian mixture: one cluster per class, like frozen-encoder features.

    Returns float32 ``X`` (n_samples, n_features) and integer labels ``y``.
    """
    rng = np.random.RandomState(seed)
    centers = rng.normal(size=(n_classes, n_features)).astype(np.float32)
    y = rng.randint(n_classes, size=n_samples)
    X = centers[y] + 0.8 * rng.normal(size=(n_samples, n_features)).astype(np.float32)
    return X, y


def embedding_cache():
    """``skkvb-bench``'s embedding cache (its default ``--cache-dir``), a joblib.Memory."""
    import joblib

    from skkvb.bench._cli import _default_cache_dir

    return joblib.Memory(_default_cache_dir(), verbose=0)


def load_embeddings(name, encoder, memory=None, max_train=None, max_test=None, device="auto"):
    """``(Z_train, y_train, Z_test, y_test)``: benchmark dataset ``name`` through
    ``encoder`` (``"raw"``: the inputs as they are), as ``skkvb-bench`` embeds
    it, optionally subsampled (stratified) to ``max_train`` / ``max_test``.
    Embeddings missing from ``memory`` (default :func:`embedding_cache`) are
    computed and cached there; with an image encoder that is slow on a CPU.
    """
    from skkvb.bench._datasets import load_dataset
    from skkvb.bench._encoders import embed

    memory = embedding_cache() if memory is None else memory
    data = load_dataset(name, max_train=max_train, max_test=max_test)
    Z_train = embed(encoder, data.X_train, data.image_shape, memory=memory, device=device)
    Z_test = embed(encoder, data.X_test, data.image_shape, memory=memory, device=device)
    return np.asarray(Z_train), data.y_train, np.asarray(Z_test), data.y_test


def add_data_arguments(parser):
    """``--dataset``, ``--encoder``, ``--max-train`` and ``--max-test``, read
    by :func:`embedded_data`."""
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--encoder", default="raw")
    parser.add_argument("--max-train", type=int, default=None)
    parser.add_argument("--max-test", type=int, default=None)
    return parser


def embedded_data(args, name=None):
    """:func:`load_embeddings` of the arguments of :func:`add_data_arguments`
    (``name`` instead of ``args.dataset`` where given)."""
    return load_embeddings(
        args.dataset if name is None else name, args.encoder,
        max_train=args.max_train, max_test=args.max_test,
    )


def normalise(kind, Z_key, Z_train, Z_test):
    """The key data, training and test inputs under one feature scaling.

    ``task``: StandardScaler fitted on the training inputs; ``key``: fitted on
    the key data; ``own``: key data and task data each standardised with their
    own statistics; ``l2``: each row scaled to unit norm (no statistics);
    ``none``: as they are.
    """
    from sklearn.preprocessing import StandardScaler, normalize

    if kind == "none":
        return Z_key, Z_train, Z_test
    if kind == "l2":
        return tuple(normalize(Z).astype(np.float32) for Z in (Z_key, Z_train, Z_test))
    if kind == "own":
        key_scaler, task_scaler = StandardScaler().fit(Z_key), StandardScaler().fit(Z_train)
        return (
            key_scaler.transform(Z_key).astype(np.float32),
            task_scaler.transform(Z_train).astype(np.float32),
            task_scaler.transform(Z_test).astype(np.float32),
        )
    scaler = StandardScaler().fit(Z_train if kind == "task" else Z_key)
    return tuple(scaler.transform(Z).astype(np.float32) for Z in (Z_key, Z_train, Z_test))


# ------------------------------------------------------------------ output


class Table:
    """A fixed-width text table.

    ``columns`` are ``(title, width, format spec)``; the first column is
    left-aligned, the others right-aligned, cells joined by ``sep``. A cell
    given as a string is printed as it is, ``None`` as ``missing``; a row may
    fill only its first cells.
    """

    def __init__(self, columns, sep="", missing=""):
        self.columns = list(columns)
        self.sep = sep
        self.missing = missing

    def _line(self, texts):
        return self.sep.join(
            text.ljust(width) if i == 0 else text.rjust(width)
            for i, (text, (_, width, _)) in enumerate(zip(texts, self.columns))
        )

    def header(self):
        """The titles, aligned as the cells below them."""
        return self._line([title for title, _, _ in self.columns])

    def row(self, *cells):
        """One row: each cell formatted with its column's spec."""
        texts = [
            self.missing if cell is None else cell if isinstance(cell, str) else format(cell, spec)
            for cell, (_, _, spec) in zip(cells, self.columns)
        ]
        return self._line(texts)
