"""Residuals (head less fetched key) of a validated input array, dense or scipy
sparse, for the value rules that read them (``value_update="count-residual"``)."""

import warnings

import scipy.sparse as sp
import torch

from ._encoding import SPARSE_CHUNK_ROWS
from .engine.values.residual import head_residuals

__all__ = ["residuals_of_array"]


def residuals_of_array(X, projection, keys, codes):
    """(N, C, d_k) float32 tensor; a sparse X is densified ``SPARSE_CHUNK_ROWS``
    rows at a time, which gives the residuals of its dense twin."""
    if not sp.issparse(X):
        with warnings.catch_warnings():
            # Read-only arrays (pandas copy-on-write, memory maps) are only read here.
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            return head_residuals(X, projection, keys, codes)
    out = torch.empty(*codes.shape, keys.shape[2], dtype=torch.float32, device=keys.device)
    for start in range(0, X.shape[0], SPARSE_CHUNK_ROWS):
        rows = slice(start, start + SPARSE_CHUNK_ROWS)
        out[rows] = head_residuals(X[rows].toarray(), projection, keys, codes[rows])
    return out
