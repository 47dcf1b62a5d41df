"""Running the encoder over many samples: batches, precision and progress.

- :func:`prepared_batches`: the batches, prepared in this process one at a
  time, or by a ``torch.utils.data.DataLoader`` in worker processes.
- :func:`precision`: the context a forward pass runs in for a ``dtype``
  (autocast to float16 or bfloat16), or a clear error where the device cannot.
- :func:`progress_bar`: the package's tqdm progress bar over the samples,
  at a low rate in a log.
"""

import contextlib
import sys
import time
import warnings

import torch

from .._progress import progress_bar as shared_progress_bar

__all__ = ["precision", "prepared_batches", "progress_bar"]

# Seconds between two progress lines written to a log (stderr not a terminal).
_LOG_INTERVAL_S = 30.0
_DESCRIPTION = "FrozenBackboneTransformer"


def prepared_batches(X, batch_size, prepare, num_workers=0, pin_memory=False):
    """Yield ``prepare(X[i:i + batch_size])`` for consecutive slices of ``X``.

    With workers, each slice is prepared (decoded, transformed) in a worker
    process; the slices, and hence the results, are the same as without.
    Close the generator when done early: that stops the workers.
    """
    slices = _Slices(X, batch_size, prepare)
    if num_workers == 0 and not pin_memory:
        yield from (slices[i] for i in range(len(slices)))
        return
    loader = torch.utils.data.DataLoader(
        slices,
        batch_size=None,  # each item is a whole batch already
        collate_fn=_unchanged,
        num_workers=num_workers,
        pin_memory=pin_memory,
    )
    batches = iter(loader)
    try:
        yield from batches
    finally:
        # Left to the garbage collector -- late, when a traceback holds the
        # iterator -- stopping the workers waits out their timeouts (seconds).
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


class _Slices(torch.utils.data.Dataset):
    """Batch ``i`` of ``X``, prepared: what the DataLoader's workers compute."""

    def __init__(self, X, batch_size, prepare):
        self.X, self.batch_size, self.prepare = X, batch_size, prepare

    def __len__(self):
        return -(-len(self.X) // self.batch_size)

    def __getitem__(self, index):
        start = index * self.batch_size
        return self.prepare(self.X[start : start + self.batch_size])


def _unchanged(batch):
    """The DataLoader's default would turn numpy arrays into tensors."""
    return batch


def precision(dtype, device):
    """The context the forward pass runs in for the ``dtype`` parameter.

    ``"float16"`` and ``"bfloat16"`` run under ``torch.autocast``; for a dtype
    this device cannot autocast to, torch warns and runs in float32 (CPU, MPS)
    or raises (a CUDA GPU without bfloat16): either way, a ``ValueError`` here.
    """
    if dtype in ("auto", "float32"):
        return contextlib.nullcontext()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return torch.autocast(device.type, dtype=getattr(torch, dtype))
        except (RuntimeError, Warning) as exc:
            raise ValueError(
                f"dtype={dtype!r} cannot run on device {device}: {exc} Use dtype='auto' "
                "or 'float32', or another device."
            ) from None


def progress_bar(n_samples, verbose):
    """The package's tqdm bar over ``n_samples``, updated per batch; silent at verbose=0.

    On a terminal tqdm redraws it in place. Written to a log, each update is a
    line: they are passed on at most every ``_LOG_INTERVAL_S`` seconds at
    verbose=1, every batch from 2 on, the final count once, when it closes.
    """
    bar = shared_progress_bar(n_samples, _DESCRIPTION, "samples", verbose > 0)
    if verbose <= 0 or _is_terminal(sys.stderr):
        return bar
    return _LogLines(bar, _LOG_INTERVAL_S if verbose == 1 else 0.0)


def _is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class _LogLines:
    """Counts passed on to a bar written to a log, at most every ``interval`` seconds.

    The last count is left to the bar's closing line, which would repeat it.
    """

    def __init__(self, bar, interval):
        self.bar, self.interval = bar, interval
        self.pending, self.last = 0, time.monotonic()

    def update(self, n):
        self.pending += n
        due = time.monotonic() - self.last >= self.interval
        if due and self.bar.n + self.pending < self.bar.total:
            self.bar.update(self.pending)
            self.pending, self.last = 0, time.monotonic()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.bar.n += self.pending  # shown by close(), without a line of its own first
        self.bar.close()
        return False
