"""A digest of the numbers in an estimator's pickled state.

A pickle carries no checksum: a flipped byte in a key or a count would load
silently and predict nonsense. The digest covers every array, tensor, torch
module, engine value model (a sparse count store included) and calibration
sample in the state; :func:`~skkvb._persistence.untag_state` refuses state
whose numbers no longer match it.
"""

import hashlib

import numpy as np
import torch

from ._calibration import CalibrationSample
from .engine.values import ValueModel
from .engine.values.sparse_counts import SparseCounts

__all__ = ["state_digest"]


def state_digest(state):
    """Hex digest of the arrays, tensors, modules and value models of a state dict."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(state):
        _feed(digest, name, state[name])
    return digest.hexdigest()


def _feed(digest, name, value):
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, np.ndarray):
        digest.update(f"{name}:{value.dtype}:{value.shape}".encode())
        if value.dtype.kind == "O":  # labels as Python objects: their text
            digest.update(repr(value.tolist()).encode())
        else:
            digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, torch.nn.Module):
        for key, tensor in value.state_dict().items():
            _feed(digest, f"{name}.{key}", tensor)
    elif isinstance(value, SparseCounts):  # its arrays as one CSR, whatever the chunks
        for key, item in sorted(value.arrays().items()):
            _feed(digest, f"{name}.{key}", item)
    elif isinstance(value, (ValueModel, CalibrationSample)):
        for key, item in sorted(vars(value).items()):
            _feed(digest, f"{name}.{key}", item)
