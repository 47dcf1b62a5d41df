"""Keys: per-codebook EMA (online k-means) fitting with dead-key revival (DKVB step 2).

Plain torch on whatever device the tensors live on. Fitted without labels; once
fitted, keys are frozen.
"""

import math
from dataclasses import dataclass

import torch

from .codes import (
    DEFAULT_CHUNK_BYTES,
    flat_codes,
    nearest_keys,
    prepare_keys,
    refresh_prepared_keys,
)
from .threads import single_threaded

__all__ = [
    "EMAState",
    "LAPLACE_EPS",
    "ema_update",
    "init_ema_state",
    "reseed_unused_keys",
    "resume_ema_state",
    "smoothed_counts",
]

# Laplace smoothing of the EMA counts, as in VQ-VAE.
LAPLACE_EPS = 1e-5


@dataclass
class EMAState:
    """Running EMA statistics of one set of codebooks.

    ``counts`` (C, K) is the EMA of how many heads each key attracted and
    ``sums`` (C, K, d_k) the EMA of their sum; ``keys = sums / smoothed(counts)``.
    ``prepared`` is the search's ``prepare_keys(keys)``, kept up to date by
    :func:`ema_update` (None until its first step).
    """

    keys: torch.Tensor
    counts: torch.Tensor
    sums: torch.Tensor
    prepared: object = None


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


def smoothed_counts(counts):
    """Laplace-smoothed EMA counts (C, K): what a key's EMA sum is divided by."""
    n_keys = counts.shape[-1]
    total = counts.sum(-1, keepdim=True)
    return (counts + LAPLACE_EPS) / (total + n_keys * LAPLACE_EPS) * total


def resume_ema_state(keys, counts):
    """The EMA state to go on fitting ``keys`` (C, K, d_k) with EMA ``counts`` (C, K).

    Each key is its EMA sum divided by its smoothed count, as of the last step
    that moved it; since then sum and count have decayed together. So the sums
    are ``keys * smoothed_counts(counts)`` -- up to float32 rounding and a drift
    of the smoothing below ``LAPLACE_EPS / count`` (relative) -- and need not be
    kept between fitting calls. Returns new tensors; the arguments are left as they are.
    """
    sums = keys * smoothed_counts(counts).unsqueeze(-1)
    return EMAState(keys=keys.clone(), counts=counts.clone(), sums=sums)


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
    The search is split over torch's threads; the statistics, a sequence of
    small operations, run on one (see :mod:`.threads`).
    """
    n_threads = torch.get_num_threads()
    with single_threaded():
        if state.prepared is None:
            state.prepared = prepare_keys(state.keys)
        codes = nearest_keys(
            heads, state.keys, chunk_bytes=chunk_bytes, prepared=state.prepared,
            n_threads=n_threads,
        )
        moved = _update_statistics(state, heads, codes, decay, dead_key_threshold, generator)
        # Only the moved keys' search operands change: refreshed, not rebuilt.
        state.prepared = refresh_prepared_keys(state.prepared, moved)
    return codes


def _update_statistics(state, heads, codes, decay, dead_key_threshold, generator):
    """The EMA step of :func:`ema_update` given the batch's codes.

    A batch hits at most B of each codebook's K keys, so the batch's sums and
    the keys are computed for the hit rows only; the one pass over all the
    sums is their decay. Same operations, same order per element as the dense
    form ``sums * decay + (1 - decay) * batch_sums``: the same keys, bit for bit.
    Returns the flat rows (``c * K + k``) of the keys it moved or revived.
    """
    n_samples, n_codebooks, key_dim = heads.shape
    n_keys = state.keys.shape[1]
    flat = flat_codes(codes, n_keys).reshape(-1)
    batch_counts = torch.bincount(flat, minlength=n_codebooks * n_keys).to(heads.dtype)
    # Rows hit by the batch, ascending; index_add_ in the batch's order keeps
    # each row's summation order.
    hit, slot = torch.unique(flat, return_inverse=True)
    batch_sums = heads.new_zeros(hit.numel(), key_dim)
    batch_sums.index_add_(0, slot, heads.reshape(-1, key_dim))

    state.counts.mul_(decay).add_(batch_counts.view(n_codebooks, n_keys), alpha=1 - decay)
    sums = state.sums.view(-1, key_dim)
    sums.mul_(decay)
    hit_sums = sums.index_select(0, hit).add_(batch_sums, alpha=1 - decay)
    sums.index_copy_(0, hit, hit_sums)
    # Only keys this batch assigned heads to move. For the others the exact EMA
    # ratio sums / counts is unchanged; recomputing them through the smoothing
    # would drag every rarely used key towards the origin as its count decays.
    smoothed = smoothed_counts(state.counts).view(-1, 1)
    state.keys.view(-1, key_dim).index_copy_(0, hit, hit_sums / smoothed.index_select(0, hit))

    # One aminmax pass (inf and NaN propagate) instead of isfinite's several.
    low, high = torch.aminmax(state.sums)
    if not (math.isfinite(low.item()) and math.isfinite(high.item())):
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
        hit = torch.cat([hit, dead_codebook * n_keys + dead_key])
    return hit


def reseed_unused_keys(keys, unused, heads, generator, n_steps=5):
    """Keys where ``unused`` (C, K) is True, moved to where ``heads`` lie.

    They restart at random heads of the batch, then take ``n_steps`` k-means
    steps in which every head goes to its nearest key -- used or not -- and
    only unused keys move, to the mean of the heads they attracted. Used keys
    stay put, so the codes and values learned with them keep their meaning.
    For a stream whose keys were fitted on its first batch: later classes get
    keys of their own instead of sharing the few near them.

    Returns the new keys (C, K, d_k); ``keys`` is left as it is. The searches
    are split over torch's threads, the rest runs on one.
    """
    n_samples, n_codebooks, key_dim = heads.shape
    n_keys = keys.shape[1]
    n_threads = torch.get_num_threads()
    keys = keys.clone()
    codebook_index, key_index = torch.nonzero(unused, as_tuple=True)
    if codebook_index.numel() == 0:
        return keys
    rows = torch.randint(n_samples, (codebook_index.numel(),), generator=generator)
    keys[codebook_index, key_index] = heads[rows.to(heads.device), codebook_index]
    movable = unused.reshape(-1)
    with single_threaded():
        for _ in range(n_steps):
            codes = nearest_keys(heads, keys, n_threads=n_threads)
            flat = flat_codes(codes, n_keys).reshape(-1)
            counts = torch.bincount(flat, minlength=n_codebooks * n_keys)
            sums = heads.new_zeros(n_codebooks * n_keys, key_dim)
            sums.index_add_(0, flat, heads.reshape(-1, key_dim))
            move = movable & (counts > 0)
            flat_keys = keys.view(-1, key_dim)
            flat_keys[move] = sums[move] / counts[move].unsqueeze(1).to(heads.dtype)
    return keys
