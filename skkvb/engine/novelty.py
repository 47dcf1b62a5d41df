"""Novelty: how far a head lies from the key it fetched, and how often training fetched it.

Plain torch on whatever device the tensors live on. Shapes as in
:mod:`~skkvb.engine.codes`: inputs (N, D), keys (C, K, d_k), codes (N, C).
"""

import torch

from .codes import ENCODE_BLOCK_ROWS
from .heads import project

__all__ = ["head_distances", "typicality"]


def head_distances(inputs, projection, keys, codes):
    """Squared L2 distance from each head to the key its code names: (N, C) float64.

    The difference is taken directly (not expanded into norms and a product),
    so a head that sits on its key is at distance zero, and squared in
    float64, where heads of any float32 magnitude keep a finite, non-zero
    square (in float32 those beyond 2**64 would overflow). Rows go through in
    blocks of exactly ``ENCODE_BLOCK_ROWS``, the last one padded, as in
    :func:`~skkvb.engine.codes.encode`: a sample's distances do not depend on
    which other samples share the call.
    """
    n_codebooks = keys.shape[0]
    device = keys.device
    codebook = torch.arange(n_codebooks, device=device)
    out = torch.empty(codes.shape, dtype=torch.float64, device=device)
    for start in range(0, inputs.shape[0], ENCODE_BLOCK_ROWS):
        block = torch.as_tensor(inputs[start : start + ENCODE_BLOCK_ROWS])
        block = block.to(device, torch.float32)
        n_rows = block.shape[0]
        if n_rows < ENCODE_BLOCK_ROWS:
            block = torch.cat([block, block[-1:].expand(ENCODE_BLOCK_ROWS - n_rows, -1)])
        heads = project(block, projection, n_codebooks)[:n_rows]
        fetched = keys[codebook, codes[start : start + n_rows]]
        out[start : start + n_rows] = (heads - fetched).double().pow(2).sum(-1)
    return out


def typicality(usage, codes, distances, distance_sums, smoothing):
    """How typical each sample is of the training samples: (N,) float64, higher = more.

    Per codebook, the log-probability of the fetched key's cell under the
    training samples, additively smoothed, minus the head's squared distance
    to that key relative to the training samples' mean; averaged over
    codebooks::

        mean over c of  log((n_c + a) / (n + a * K))  -  d_c / mean_c

    ``n_c`` is the number of training samples that fetched the sample's key
    (``usage`` (C, K)), ``n`` the number of training samples, ``K`` keys per
    codebook, ``a`` the ``smoothing``; ``d_c`` its squared distance to the key
    (``distances`` (N, C)) and ``mean_c`` the training samples' mean of it
    (``distance_sums`` (C,) / n). The two terms are the log-likelihood of the
    cell and, up to a constant, of the distance under an exponential model
    with the training mean. With no training sample the distance term is
    left out.
    """
    n_codebooks, n_keys = usage.shape
    usage = usage.double()
    fetched = usage[torch.arange(n_codebooks, device=usage.device), codes]
    n_samples = usage[0].sum()
    cell = torch.log((fetched + smoothing) / (n_samples + smoothing * n_keys))
    if n_samples == 0:
        return cell.mean(1)
    mean_distance = (distance_sums.double() / n_samples).clamp(min=torch.finfo(torch.float64).tiny)
    return (cell - distances.double() / mean_distance).mean(1)
