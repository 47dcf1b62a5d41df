"""Device resolution, seeding and CPU <-> device moves of fitted state.

Shared by every estimator so that "auto", pickling and seeding behave the same
everywhere. Imports torch and numpy only.
"""

import warnings

import numpy as np
import torch

__all__ = ["resolve_device", "draw_seed", "torch_generator", "state_to_cpu", "state_to_device"]


def resolve_device(device):
    """Return the :class:`torch.device` that ``device`` names.

    ``"auto"`` means CUDA when it is available, else the CPU. A CUDA device that
    is not available raises a ``ValueError`` naming the parameter.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device={device!r} is not a valid torch device; use 'auto', 'cpu', "
            "'cuda' or 'cuda:N'."
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available.")
    return resolved


def draw_seed(rng):
    """Draw a 63-bit integer seed from a numpy ``RandomState``."""
    return int(rng.randint(0, np.iinfo(np.int32).max)) * 2**31 + int(
        rng.randint(0, np.iinfo(np.int32).max)
    )


def torch_generator(seed):
    """A CPU torch generator: random draws happen on the CPU so that CPU and GPU
    runs with the same seed make the same choices."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seed))
    return generator


def state_to_cpu(state):
    """Copy of an attribute dict with every tensor moved to the CPU.

    The device each tensor came from is recorded under ``"_saved_device"`` so
    that unpickling can move it back when that device exists.
    """
    out = {}
    saved_device = None
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            if value.device.type != "cpu":
                saved_device = str(value.device)
            value = value.detach().cpu()
        out[name] = value
    out["_saved_device"] = saved_device
    return out


def state_to_device(state):
    """Inverse of :func:`state_to_cpu`: move tensors back to their device.

    When the saved device is a GPU that this machine lacks, the tensors stay on
    the CPU and a ``UserWarning`` says so (the estimator keeps working).
    """
    state = dict(state)
    saved_device = state.pop("_saved_device", None)
    if saved_device is None:
        return state, None
    target = torch.device(saved_device)
    if target.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(
            f"This estimator was saved on {saved_device}, which is not available "
            "here; its state was loaded on the CPU.",
            UserWarning,
        )
        return state, torch.device("cpu")
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            state[name] = value.to(target)
    return state, target
