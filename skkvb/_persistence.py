"""Fitted state that survives failures and pickling.

Two guarantees every estimator of the package gives:

- *All or nothing.* A fitting call that raises -- invalid input, a
  ``KeyboardInterrupt``, running out of memory -- leaves the estimator exactly
  as it was before the call (:func:`all_or_nothing`).
- *Versioned, checked pickles.* Pickled state carries the format it was
  written in and a digest of its numbers; loading a format this version cannot
  read, or numbers that no longer match their digest, fails with a message
  that says so (:func:`tag_state`, :func:`untag_state`; used by
  :class:`~skkvb._device.DeviceMixin`).

Fitting calls and pickling hold a per-estimator lock (:func:`state_lock`), so a
snapshot taken in one thread never sees a fitting call of another half done.
"""

import functools
import threading
import weakref
from importlib import metadata

import numpy as np

from ._integrity import state_digest

__all__ = [
    "OLDEST_READABLE_FORMAT",
    "STATE_FORMAT",
    "all_or_nothing",
    "restore",
    "snapshot",
    "state_lock",
    "tag_state",
    "untag_state",
]

# Version of the layout of pickled fitted state. Bump it when attributes are
# renamed, removed or change meaning, so that old pickles fail loudly instead of
# predicting nonsense. State pickled before the tag existed has format 1.
# Format 2: value models as engine objects, iterations named max_iter.
# Format 3: KeyCodebook keeps no EMA sums (they follow from keys and counts)
# and records n_keys_. Older formats still read are upgraded by the estimator.
STATE_FORMAT = 3
OLDEST_READABLE_FORMAT = 2
_FORMAT_KEY = "_skkvb_state_format"
_VERSION_KEY = "_skkvb_version"
_DIGEST_KEY = "_skkvb_digest"

# One re-entrant lock per live estimator, kept outside its attributes so that
# clone, get_params and pickles never see it.
_LOCKS = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def state_lock(estimator):
    """The lock that fitting calls and snapshots of ``estimator`` hold."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(estimator)
        if lock is None:
            lock = _LOCKS[estimator] = threading.RLock()
        return lock


def _package_version():
    try:
        return metadata.version("skkvb")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "unknown"


def snapshot(estimator):
    """What :func:`restore` needs to put ``estimator``'s attributes back.

    Attributes are kept by reference (a shallow copy of ``__dict__``), NumPy
    random states by value, since fitting draws from them in place.
    """
    saved = dict(vars(estimator))
    random_states = {
        name: value.get_state()
        for name, value in saved.items()
        if isinstance(value, np.random.RandomState)
    }
    return saved, random_states


def restore(estimator, saved_snapshot):
    """Put back the attributes :func:`snapshot` recorded."""
    saved, random_states = saved_snapshot
    vars(estimator).clear()
    vars(estimator).update(saved)
    for name, state in random_states.items():
        saved[name].set_state(state)


def all_or_nothing(method):
    """Decorate a fitting method so that, if it raises, the estimator's attributes
    are restored to what they were before the call (see :func:`snapshot`).

    Any other in-place mutation (a tensor updated in place) is the method's to undo.
    """

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with state_lock(self):
            saved = snapshot(self)
            try:
                return method(self, *args, **kwargs)
            except BaseException:
                restore(self, saved)
                raise

    return wrapper


def tag_state(state):
    """Copy of a pickled attribute dict with the state format, the package
    version and the digest of its numbers."""
    state = dict(state)
    state[_DIGEST_KEY] = state_digest(state)
    state[_FORMAT_KEY] = STATE_FORMAT
    state[_VERSION_KEY] = _package_version()
    return state


def untag_state(state, owner, upgrade=None):
    """Inverse of :func:`tag_state`: the attribute dict without the tags.

    Raises ``ValueError`` naming both versions when the state was written in a
    format outside ``OLDEST_READABLE_FORMAT`` to :data:`STATE_FORMAT`, and
    when its numbers do not match the digest written with them. ``owner``
    names the estimator class. State of an older readable format goes through
    ``upgrade(state, state_format)``, which returns it in the current layout.
    """
    state = dict(state)
    # scikit-learn's own tag, re-added by every pickling; BaseEstimator only
    # consumes it for its own classes and would leave it as an attribute.
    state.pop("_sklearn_version", None)
    state_format = state.pop(_FORMAT_KEY, 1)
    written_by = state.pop(_VERSION_KEY, "before 0.1")
    if not (
        isinstance(state_format, int) and OLDEST_READABLE_FORMAT <= state_format <= STATE_FORMAT
    ):
        raise ValueError(
            f"This {owner} was pickled by skkvb {written_by} in state format "
            f"{state_format!r}, but skkvb {_package_version()} reads formats "
            f"{OLDEST_READABLE_FORMAT} to {STATE_FORMAT} only. Load it with skkvb "
            f"{written_by}, or fit it again."
        )
    digest = state.pop(_DIGEST_KEY, None)
    if digest != state_digest(state):
        raise ValueError(
            f"This {owner}'s saved arrays do not match the digest saved with them: the "
            "file is corrupted or was changed. Load an intact copy, or fit it again."
        )
    if state_format < STATE_FORMAT and upgrade is not None:
        state = upgrade(state, state_format)
    return state

