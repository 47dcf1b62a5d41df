"""Fixed maps from an embedding to the heads of the bottleneck (DKVB step 1).

Every mode is a fixed ``(n_features, n_codebooks * key_dim)`` matrix drawn once
with numpy, so heads are one matrix product on any device and CPU and GPU runs
with the same seed see identical heads.
"""

import numpy as np

__all__ = ["PROJECTIONS", "head_shape", "make_projection", "project"]

PROJECTIONS = ("gaussian", "orthogonal", "partition", "none")


def head_shape(kind, n_features, n_codebooks, key_dim):
    """Return ``(n_codebooks, key_dim)`` that projection ``kind`` produces.

    ``"gaussian"`` and ``"orthogonal"`` keep the requested shape; ``"partition"`` splits the
    features into ``n_codebooks`` chunks of ``ceil(n_features / n_codebooks)``
    (the last ones zero-padded); ``"none"`` is one codebook on the raw input.
    """
    if kind in ("gaussian", "orthogonal"):
        return n_codebooks, key_dim
    if kind == "partition":
        return n_codebooks, -(-n_features // n_codebooks)
    if kind == "none":
        return 1, n_features
    raise ValueError(f"projection must be one of {PROJECTIONS}, got {kind!r}.")


def make_projection(kind, n_features, n_codebooks, key_dim, rng):
    """Draw the projection matrix, float32 numpy of shape (D, C * d_k).

    Gaussian columns are normalised to unit L2 norm over the input dimension,
    as in the reference implementation, so head scale does not grow with D.
    ``"orthogonal"`` draws the same Gaussian matrix and orthonormalises its
    columns in consecutive blocks of D (orthogonal random features): within
    a block no two columns overlap, so where ``C * d_k`` is a multiple of D the
    heads keep every squared distance exactly (times ``C * d_k / D``), where
    independent columns stretch some directions and shrink others.
    """
    n_codebooks, key_dim = head_shape(kind, n_features, n_codebooks, key_dim)
    if kind in ("gaussian", "orthogonal"):
        matrix = rng.standard_normal((n_features, n_codebooks * key_dim))
        if kind == "orthogonal":
            for start in range(0, matrix.shape[1], n_features):
                block = matrix[:, start : start + n_features]
                q, r = np.linalg.qr(block)
                # Signs from r's diagonal make the factorisation unique, so the
                # matrix depends on the draw only, not on the LAPACK build.
                signs = np.where(np.diagonal(r) < 0, -1.0, 1.0)
                matrix[:, start : start + n_features] = q * signs
        matrix /= np.linalg.norm(matrix, axis=0, keepdims=True)
        return matrix.astype(np.float32)
    matrix = np.zeros((n_features, n_codebooks * key_dim), dtype=np.float32)
    if kind == "partition":
        for c, chunk in enumerate(np.array_split(np.arange(n_features), n_codebooks)):
            matrix[chunk, c * key_dim + np.arange(chunk.size)] = 1.0
    else:
        matrix[np.arange(n_features), np.arange(n_features)] = 1.0
    return matrix


def project(inputs, matrix, n_codebooks):
    """Heads of a batch: (N, D) @ (D, C * d_k) -> (N, C, d_k)."""
    return (inputs @ matrix).view(inputs.shape[0], n_codebooks, -1)
