"""Device resolution, seeding and CPU <-> device moves of fitted state.

Shared by every estimator so that "auto", pickling and seeding behave the same
everywhere. Imports torch and numpy only.
"""

import contextlib
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

__all__ = [
    "draw_seed",
    "resolve_device",
    "single_threaded",
    "split_over_threads",
    "state_to_cpu",
    "state_to_device",
    "torch_generator",
]


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


def split_over_threads(work, n_items):
    """Run ``work(range)`` over contiguous ranges of ``range(n_items)``, one per
    torch CPU thread, each range on its own single-threaded worker.

    For loops of many small tensor operations (cache-sized blocks of the key
    search), torch's own intra-op threads synchronise at every operation; when
    another process holds a core, each of those barriers stalls (measured: 10x
    slower than one thread on a loaded 2-core machine). Splitting the loop
    itself gives the same parallelism with one synchronisation per call.
    ``torch.set_num_threads`` inside a worker applies to that worker only.
    """
    n_threads = min(torch.get_num_threads(), n_items)
    if n_threads <= 1:
        work(range(n_items))
        return
    bounds = [round(i * n_items / n_threads) for i in range(n_threads + 1)]

    def single_threaded(items):
        torch.set_num_threads(1)
        work(items)

    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        futures = [pool.submit(single_threaded, range(a, b)) for a, b in zip(bounds, bounds[1:])]
        for future in futures:
            future.result()


@contextlib.contextmanager
def single_threaded():
    """Run the block with one torch CPU thread in the calling thread only.

    The SGD loop is a sequence of small scatter/gather operations on one
    batch; intra-op threads add a barrier to each and stall when a core is
    busy (measured on a loaded 2-core machine: 0.2 s per epoch on one thread,
    0.6-1.1 s on two). Other threads keep their own setting.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
