"""The ``n_jobs`` parameter: how many CPU threads torch uses during one call.

The engine spends the threads it is given on the nearest-key search and runs
sequences of small operations on one (:mod:`skkvb.engine.threads`); this module
decides how many it is given:

- ``None``: inside another estimator's call (a classifier fitting its
  codebook), that call's count. Otherwise scikit-learn's meaning: one, or
  ``k`` inside ``joblib.parallel_config(n_jobs=k)``; at most torch's setting
  in the calling thread, which carries the outer limits (``OMP_NUM_THREADS``,
  set in joblib's and dask's workers; ``threadpoolctl.threadpool_limits``).
  One thread is the default because several collapse on a busy machine
  (``benchmarks/busy_machine.py``).
- ``-1``: every core; ``-2`` all but one, and so on.
- ``k > 0``: ``k`` threads.

Each call puts torch's setting back when it ends, also when it raises.
"""

import contextlib
import functools
import threading
from numbers import Integral

import torch
from joblib import cpu_count, effective_n_jobs

from ._compat import Interval, validate_parameter_constraints
from ._validation import Count
from .engine.threads import torch_threads

__all__ = ["N_JOBS_CONSTRAINT", "effective_n_threads", "n_jobs_threads", "uses_n_jobs"]

N_JOBS_CONSTRAINT = [Interval(Integral, None, -1, closed="right"), Count(), None]

# The thread count of the estimator call running in this thread, if any.
_calls = threading.local()


def effective_n_threads(n_jobs):
    """The torch CPU threads a call with this ``n_jobs`` runs on (see the module)."""
    if n_jobs is None:
        enclosing = getattr(_calls, "n_threads", None)
        if enclosing is not None:
            return enclosing
        return max(1, min(effective_n_jobs(None), torch.get_num_threads()))
    if n_jobs < 0:
        return max(1, cpu_count() + 1 + n_jobs)
    return n_jobs


@contextlib.contextmanager
def n_jobs_threads(estimator):
    """Run the block on ``estimator.n_jobs``'s threads; estimators called
    inside it with ``n_jobs=None`` use the same count.

    ``n_jobs`` is checked first (it may have been set after fitting); an
    invalid one raises ``InvalidParameterError`` naming it.
    """
    validate_parameter_constraints(
        {"n_jobs": N_JOBS_CONSTRAINT}, {"n_jobs": estimator.n_jobs},
        caller_name=type(estimator).__name__,
    )
    n_threads = effective_n_threads(estimator.n_jobs)
    enclosing = getattr(_calls, "n_threads", None)
    with torch_threads(n_threads):
        _calls.n_threads = n_threads
        try:
            yield n_threads
        finally:
            _calls.n_threads = enclosing


def uses_n_jobs(method):
    """Decorate an estimator method to run on ``n_jobs``'s threads and restore
    torch's setting afterwards, also when it raises."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with n_jobs_threads(self):
            return method(self, *args, **kwargs)

    return wrapper
