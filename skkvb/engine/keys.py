"""Keys: per-codebook EMA (online k-means) fitting with dead-key revival (DKVB step 2).

Plain torch on whatever device the tensors live on. Fitted without labels; once
fitted, keys are frozen.
"""

from dataclasses import dataclass

import torch

from .codes import DEFAULT_CHUNK_BYTES, flat_codes, nearest_keys

__all__ = ["EMAState", "LAPLACE_EPS", "ema_update", "init_ema_state", "reseed_unused_keys"]

# Laplace smoothing of the EMA counts, as in VQ-VAE.
LAPLACE_EPS = 1e-5


@dataclass
class EMAState:
    """Running EMA statistics of one set of codebooks.

    ``counts`` (C, K) is the EMA of how many heads each key attracted and
    ``sums`` (C, K, d_k) the EMA of their sum; ``keys = sums / smoothed(counts)``.
    """

    keys: torch.Tensor
    counts: torch.Tensor
    sums: torch.Tensor


def init_ema_state(heads, n_keys, generator):
    """Keys start at random heads of the first batch; counts start at ONE.

    Starting counts at zero makes ``sums / counts`` explode for every key the
    first batch misses, so counts and sums start as if each key had been hit
    once by its own initial value.
    """
    n_samples, n_codebooks, _ = heads.shape
    rows = torch.randint(n_samples, (n_codebooks, n_keys), generator=generator)
    keys = _gather_heads(heads, rows.to(heads.device))
    counts = torch.ones(n_codebooks, n_keys, dtype=heads.dtype, device=heads.device)
    return EMAState(keys=keys, counts=counts, sums=keys.clone())


def _gather_heads(heads, rows):
    """heads[rows[c, k], c] for every (c, k): (C, K, d_k)."""
    codebook_index = torch.arange(heads.shape[1], device=heads.device).unsqueeze(1)
    return heads[rows, codebook_index]


def ema_update(state, heads, decay, dead_key_threshold, generator, chunk_bytes=DEFAULT_CHUNK_BYTES):
    """One EMA (online k-means) step of every codebook on a batch of heads.

    Keys whose EMA count falls below ``dead_key_threshold * N / K`` (a fraction
    of uniform usage) are re-seeded from random heads of this batch, and their
    EMA state is reset with them; otherwise the next step would pull them back.
    Random draws come from a CPU generator, so CPU and GPU runs that find the
    same dead keys revive them at the same heads. Updates ``state`` in place.
    """
    n_samples, n_codebooks, key_dim = heads.shape
    n_keys = state.keys.shape[1]
    codes = nearest_keys(heads, state.keys, chunk_bytes=chunk_bytes)
    flat = flat_codes(codes, n_keys).reshape(-1)
    batch_counts = torch.bincount(flat, minlength=n_codebooks * n_keys).to(heads.dtype)
    batch_sums = torch.zeros(n_codebooks * n_keys, key_dim, dtype=heads.dtype, device=heads.device)
    batch_sums.index_add_(0, flat, heads.reshape(-1, key_dim))

    state.counts.mul_(decay).add_(batch_counts.view(n_codebooks, n_keys), alpha=1 - decay)
    state.sums.mul_(decay).add_(batch_sums.view(n_codebooks, n_keys, key_dim), alpha=1 - decay)
    total = state.counts.sum(-1, keepdim=True)
    smoothed = (state.counts + LAPLACE_EPS) / (total + n_keys * LAPLACE_EPS) * total
    # Only keys this batch assigned heads to move. For the others the exact EMA
    # ratio sums / counts is unchanged; recomputing them through the smoothing
    # would drag every rarely used key towards the origin as its count decays.
    hit = (batch_counts > 0).view(n_codebooks, n_keys, 1)
    state.keys = torch.where(hit, state.sums / smoothed.unsqueeze(-1), state.keys)

    if not torch.isfinite(state.sums).all():
        raise ValueError(
            "The inputs are too large for the float32 sums of EMA key fitting; rescale "
            "X, e.g. divide it by its largest absolute value."
        )
    dead_codebook, dead_key = torch.nonzero(
        state.counts < dead_key_threshold * n_samples / n_keys, as_tuple=True
    )
    if dead_codebook.numel():
        rows = torch.randint(n_samples, (dead_codebook.numel(),), generator=generator)
        revived = heads[rows.to(heads.device), dead_codebook]
        state.keys[dead_codebook, dead_key] = revived
        state.sums[dead_codebook, dead_key] = revived
        state.counts[dead_codebook, dead_key] = 1.0
    return codes


def reseed_unused_keys(keys, unused, heads, generator, n_steps=5):
    """Keys where ``unused`` (C, K) is True, moved to where ``heads`` lie.

    They restart at random heads of the batch, then take ``n_steps`` k-means
    steps in which every head goes to its nearest key -- used or not -- and
    only unused keys move, to the mean of the heads they attracted. Used keys
    stay put, so the codes and values learned with them keep their meaning.
    For a stream whose keys were fitted on its first batch: later classes get
    keys of their own instead of sharing the few near them.

    Returns the new keys (C, K, d_k); ``keys`` is left as it is.
    """
    n_samples, n_codebooks, key_dim = heads.shape
    n_keys = keys.shape[1]
    keys = keys.clone()
    codebook_index, key_index = torch.nonzero(unused, as_tuple=True)
    if codebook_index.numel() == 0:
        return keys
    rows = torch.randint(n_samples, (codebook_index.numel(),), generator=generator)
    keys[codebook_index, key_index] = heads[rows.to(heads.device), codebook_index]
    movable = unused.reshape(-1)
    for _ in range(n_steps):
        flat = flat_codes(nearest_keys(heads, keys), n_keys).reshape(-1)
        counts = torch.bincount(flat, minlength=n_codebooks * n_keys)
        sums = torch.zeros(n_codebooks * n_keys, key_dim, dtype=heads.dtype, device=heads.device)
        sums.index_add_(0, flat, heads.reshape(-1, key_dim))
        move = movable & (counts > 0)
        flat_keys = keys.view(-1, key_dim)
        flat_keys[move] = sums[move] / counts[move].unsqueeze(1).to(heads.dtype)
    return keys
