"""Codes of a validated input array, dense or scipy sparse, through the engine,
and the distances of its heads to the keys they fetch."""

import warnings

import scipy.sparse as sp
import torch

from .engine.codes import encode, prepare_keys
from .engine.novelty import head_distances

__all__ = ["encode_array", "head_distances_of_array"]

# Rows of a sparse X densified at a time: a multiple of the engine's encoding
# block, so a sparse X gets the codes of its dense twin in bounded memory.
SPARSE_CHUNK_ROWS = 4096


def encode_array(X, projection, keys, key_mask=None, prepared=None):
    """Codes of a validated dense or scipy sparse X: (N, C) int64 tensor.

    A sparse X is densified ``SPARSE_CHUNK_ROWS`` rows at a time; a dense one
    goes to the engine as it is (the engine converts it block by block).
    ``prepared`` is ``prepare_keys(keys, key_mask)`` when the caller has it.
    """
    if prepared is None:
        prepared = prepare_keys(keys, key_mask)
    if not sp.issparse(X):
        with warnings.catch_warnings():
            # Read-only arrays (pandas copy-on-write, memory maps) are only read here.
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            return encode(X, projection, keys, prepared=prepared)
    codes = torch.empty(X.shape[0], keys.shape[0], dtype=torch.int64, device=keys.device)
    for start in range(0, X.shape[0], SPARSE_CHUNK_ROWS):
        chunk = X[start : start + SPARSE_CHUNK_ROWS].toarray()
        rows = slice(start, start + SPARSE_CHUNK_ROWS)
        codes[rows] = encode(chunk, projection, keys, prepared=prepared)
    return codes


def head_distances_of_array(X, projection, keys, codes):
    """Squared distances of a validated X's heads to the keys ``codes`` name:
    (N, C) float64 tensor. A sparse X is densified ``SPARSE_CHUNK_ROWS`` rows at
    a time, which gives the distances of its dense twin."""
    if not sp.issparse(X):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            return head_distances(X, projection, keys, codes)
    out = torch.empty(codes.shape, dtype=torch.float64, device=keys.device)
    for start in range(0, X.shape[0], SPARSE_CHUNK_ROWS):
        rows = slice(start, start + SPARSE_CHUNK_ROWS)
        out[rows] = head_distances(X[rows].toarray(), projection, keys, codes[rows])
    return out
