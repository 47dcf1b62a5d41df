"""Row-blockwise transforms of dask arrays, without importing dask.

``KeyCodebook.transform`` and ``FrozenBackboneTransformer.transform`` turn a
row-chunked ``dask.array.Array`` into a lazy dask array of the same rows, one
task per block of rows. dask stays an optional dependency: an input can only
be a dask array if dask is already imported, so nothing here imports it.
"""

import sys

import numpy as np
from sklearn.utils.validation import validate_data

__all__ = ["is_dask_array", "transform_row_blocks"]


def is_dask_array(X):
    """Whether X is a ``dask.array.Array`` (False, cheaply, when dask is not imported)."""
    dask_array = sys.modules.get("dask.array")
    return dask_array is not None and isinstance(X, dask_array.Array)


def transform_row_blocks(estimator, X, n_features_out, dtype):
    """``estimator.transform`` of each block of rows of the dask array X.

    Returns a lazy dask array of shape ``(X.shape[0], n_features_out)`` with
    the row chunks of X. Blocks must hold whole samples, so any chunking along
    the other axes is merged first. The fitted estimator enters the graph once,
    as a single key every block depends on: a distributed scheduler then sends
    it to each worker once, not once per block.
    """
    import dask

    if X.ndim == 2 and hasattr(estimator, "n_features_in_"):
        # Feature count and names now, on the metadata; each block is validated in its task.
        validate_data(estimator, X, skip_check_array=True, reset=False)
    if X.ndim > 1 and max(X.numblocks[1:]) > 1:
        X = X.rechunk({axis: -1 for axis in range(1, X.ndim)})
    fitted = dask.delayed(estimator, traverse=False)
    return X.map_blocks(
        _transform_block,
        fitted,
        dtype=dtype,
        chunks=(X.chunks[0], (n_features_out,)),
        drop_axis=list(range(2, X.ndim)),  # images (N, H, W, C) -> (N, D)
        new_axis=[1] if X.ndim == 1 else None,  # file paths or texts (N,) -> (N, D)
        meta=np.empty((0, n_features_out), dtype=dtype),
        token=f"{type(estimator).__name__.lower()}-transform",
    )


def _transform_block(block, estimator):
    return estimator.transform(block)
