"""Progress of long work -- key fitting, value epochs, encoding, benchmarks --
with tqdm, shown only when an estimator's ``verbose`` asks for it."""

import sys

from tqdm import tqdm

__all__ = ["progress_bar", "write"]


class _OneLinePerUpdate:
    """A stream for tqdm where it is not a terminal (a CI log, a file): each
    refresh becomes its own line instead of a carriage-return overwrite."""

    def __init__(self, stream):
        self.stream = stream
        self.last = None

    def write(self, text):
        for line in text.replace("\r", "\n").split("\n"):
            line = line.rstrip()
            if line and line != self.last:  # tqdm redraws the final state on close
                self.stream.write(line + "\n")
                self.last = line

    def flush(self):
        self.stream.flush()


def progress_bar(total, desc, unit, verbose):
    """A tqdm bar on stderr, disabled unless ``verbose``.

    On a terminal it redraws in place; elsewhere it writes one line per update,
    so callers update it once per step (an epoch, a run), not per minibatch.
    """
    stream = sys.stderr
    on_terminal = hasattr(stream, "isatty") and stream.isatty()
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=not verbose,
        file=stream if on_terminal else _OneLinePerUpdate(stream),
        mininterval=0.1 if on_terminal else 0,
        dynamic_ncols=on_terminal,
    )


def write(message, file=None):
    """Print a line without breaking a bar being drawn (stdout by default)."""
    tqdm.write(message, file=file)
