"""One device mechanism for every estimator.

- :func:`resolve_device` turns a ``device`` parameter (``"auto"``, ``"cpu"``,
  ``"cuda"``, ``"cuda:N"``, a :class:`torch.device`) into a device that exists
  here; a requested GPU that is absent falls back to the CPU with a warning.
- :func:`state_to_cpu` and :func:`state_to_device` move an estimator's fitted
  state (tensors, torch modules, engine value models) to the CPU for pickling
  and back to the device it came from when loading -- or to the CPU, with a
  warning, on a machine without that device.
- :class:`DeviceMixin` gives every estimator both: its ``device`` parameter is
  checked with the others, and its pickles are device-independent and versioned.

Python's warnings machinery shows each of these warnings once per place in the
code (its default filter), so a loop over a saved GPU model does not flood.
"""

import copy
import warnings

import torch
from ._compat import InvalidParameterError
from ._persistence import state_lock, tag_state, untag_state

__all__ = ["DeviceMixin", "check_device", "resolve_device", "state_to_cpu", "state_to_device"]

_SAVED_DEVICE_KEY = "_saved_device"
# Devices the engine runs on; others ("meta", "xla", ...) hold no data or lack its kernels.
_DEVICE_TYPES = ("cpu", "cuda", "mps")


def resolve_device(device):
    """Return the :class:`torch.device` that a ``device`` parameter names.

    ``"auto"`` (or ``None``) means CUDA when it is available, else the CPU. A
    device that is not valid raises ``InvalidParameterError`` naming the
    parameter; a valid one that this machine lacks gives the CPU and a
    ``UserWarning``.
    """
    resolved = check_device(device)
    if resolved is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not _available(resolved):
        warnings.warn(
            f"device={device!r} was requested but is not available here; running on "
            "the CPU.",
            UserWarning,
            stacklevel=3,
        )
        return torch.device("cpu")
    return resolved


def check_device(device):
    """The :class:`torch.device` a ``device`` parameter names (None for "auto"),
    or ``InvalidParameterError``; whether it exists here is not checked."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return None
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        resolved = None
    if resolved is None or resolved.type not in _DEVICE_TYPES:
        raise InvalidParameterError(
            "The 'device' parameter must be 'auto', 'cpu', 'cuda', 'cuda:N', 'mps' or a "
            f"torch.device of those types. Got {device!r} instead."
        )
    return resolved


def _available(device):
    if device.type == "cuda":
        index = 0 if device.index is None else device.index
        return torch.cuda.is_available() and index < torch.cuda.device_count()
    if device.type == "mps":
        return torch.backends.mps.is_available()
    return True


def _device_of(value):
    """The device of a piece of fitted state, or None if it is not device state."""
    if isinstance(value, torch.Tensor):
        return value.device
    if isinstance(value, torch.nn.Module):
        tensor = next(iter(value.parameters()), next(iter(value.buffers()), None))
        return None if tensor is None else tensor.device
    if hasattr(value, "to") and isinstance(getattr(value, "device", None), torch.device):
        return value.device  # an engine value model
    return None


def _cpu_copy(value):
    """A copy of ``value`` on the CPU, never moving or sharing the original:
    tensors are updated in place by training, which may go on after a pickle
    has taken its state."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, torch.nn.Module):
        return copy.deepcopy(value).to("cpu")
    return value.to("cpu", copy=True)


def state_to_cpu(state):
    """Copy of an attribute dict with every piece of device state copied to the CPU.

    The device it came from is recorded under ``"_saved_device"``, so that
    :func:`state_to_device` can move it back where that device exists.
    """
    out = dict(state)
    saved_device = None
    for name, value in state.items():
        device = _device_of(value)
        if device is None:
            continue
        if device.type != "cpu":
            saved_device = str(device)
        if not isinstance(value, torch.nn.Module) or device.type != "cpu":
            out[name] = _cpu_copy(value)  # a module on the CPU is not trained: no copy
    out[_SAVED_DEVICE_KEY] = saved_device
    return out


def state_to_device(state):
    """Inverse of :func:`state_to_cpu`: the attribute dict with its device state
    on the device it was saved from -- or on the CPU, with a ``UserWarning``,
    when this machine lacks that device. Attributes that name the saved device
    (a ``device_``) name the one actually used."""
    state = dict(state)
    saved_device = state.pop(_SAVED_DEVICE_KEY, None)
    if saved_device is None:
        return state
    target = torch.device(saved_device)
    if not _available(target):
        warnings.warn(
            f"This estimator was saved on {saved_device}, which is not available here; "
            "its state was loaded on the CPU.",
            UserWarning,
            stacklevel=3,
        )
        target = torch.device("cpu")
    for name, value in state.items():
        if isinstance(value, torch.device) and value.type != "cpu":
            state[name] = target
        elif _device_of(value) is not None:
            state[name] = value.to(target)  # a fresh copy from the pickle: moving in place is fine
    return state


class DeviceMixin:
    """The device mechanism of an estimator with a ``device`` parameter.

    Put it left of ``BaseEstimator``. The ``device`` parameter is checked with
    the others (a device string is beyond sklearn's constraints). Pickles hold
    every piece of device state on the CPU and carry the state format
    (:func:`~skkvb._persistence.tag_state`); loading puts the state back on the
    device it was saved from, or on the CPU with a ``UserWarning`` where that
    device is missing.
    """

    def _validate_params(self):
        super()._validate_params()
        check_device(self.device)

    def __getstate__(self):
        with state_lock(self):  # never a fitting call of another thread half done
            return tag_state(state_to_cpu(super().__getstate__()))

    @staticmethod
    def _upgrade_state(state, state_format):
        """The attribute dict of an older readable state format, in this
        version's layout (see :func:`~skkvb._persistence.untag_state`)."""
        return state

    def __setstate__(self, state):
        state = untag_state(state, type(self).__name__, upgrade=self._upgrade_state)
        super().__setstate__(state_to_device(state))
