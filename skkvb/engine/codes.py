"""Codes: the nearest key of every head (DKVB step 3), and what is read off them.

Plain torch on whatever device the tensors live on. Shapes: heads (N, C, d_k),
keys (C, K, d_k), codes (N, C) int64. The search never materialises the full
(C, N, K) distance tensor: it walks over blocks sized to a memory budget.
"""

import math
from typing import NamedTuple

import torch

from .heads import project
from .threads import single_threaded, split_over_threads

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "PreparedKeys",
    "SAFE_MAGNITUDE_HIGH",
    "SAFE_MAGNITUDE_LOW",
    "block_shape",
    "count_usage",
    "encode",
    "first_min_index",
    "flat_codes",
    "nearest_keys",
    "prepare_keys",
    "refresh_prepared_keys",
]

# Upper bound on the distances held at once during a search (any device).
DEFAULT_CHUNK_BYTES = 256 * 2**20
# Rows per block of encode(); fixed so that every call has the same shapes.
ENCODE_BLOCK_ROWS = 256
# Distances per CPU block: big enough that the dozen small operations of a
# block's product and minimum cost little beside it (1 MiB blocks ran 1.3x
# slower at the paper's shape), small enough to stay in the L3 cache.
CPU_BLOCK_BYTES = 4 * 2**20
# Keys per slice of the two-stage minimum (see first_min_index).
MIN_SLICE = 128
# Largest absolute key entry the search uses as it is: products of d_k such
# entries stay far inside float32's range. Keys outside [LOW, HIGH] are rescaled,
# with the heads, by one power of two (exact), so codes do not change; heads
# still beyond HIGH are searched in float64.
SAFE_MAGNITUDE_HIGH = 2.0**30
SAFE_MAGNITUDE_LOW = 2.0**-30


def block_shape(n_codebooks, n_keys, batched, chunk_bytes=DEFAULT_CHUNK_BYTES):
    """(codebooks, rows) of one block of float32 distances within ``chunk_bytes``.

    ``batched`` (the GPU strategy): a block spans every codebook, so a chunk is
    one batched kernel. Otherwise (the CPU strategy) the search is bound by
    reading the distances back for the min, so a block is one codebook and as
    many rows as fit in ``CPU_BLOCK_BYTES``: it stays in cache between the
    product and the min (3x faster than one large batched product on 2 cores).
    A different number of rows changes a code only where BLAS rounds two
    keys' distances to a tie (see encode); at the benchmark shapes 1, 2 and
    4 MiB blocks gave the same codes.
    """
    row_bytes = 4 * n_keys
    if not batched:
        rows = min(int(chunk_bytes), CPU_BLOCK_BYTES) // row_bytes
        return 1, max(1, min(rows, ENCODE_BLOCK_ROWS))
    rows = int(chunk_bytes) // (row_bytes * n_codebooks)
    if rows >= 1:
        return n_codebooks, rows
    return max(1, int(chunk_bytes) // row_bytes), 1


class PreparedKeys(NamedTuple):
    """What the search needs of the keys, computed once per call of the search."""

    keys_t: torch.Tensor  # (C, d_k, K): the keys, times ``scale``, transposed
    sq_norms: torch.Tensor  # (C, 1, K): their squared norms, +inf where masked out
    scale: float  # the power of two the keys (and heads) are multiplied by
    keys: torch.Tensor  # (C, K, d_k) as given, to rescale from
    key_mask: object  # (C, K) bool Tensor or None


def _power_of_two_scale(magnitude):
    """1 when ``magnitude`` is within the safe range, else the power of two that
    brings it to about 1: multiplying by it is exact, so codes do not change."""
    if magnitude == 0 or SAFE_MAGNITUDE_LOW <= magnitude <= SAFE_MAGNITUDE_HIGH:
        return 1.0
    return 2.0 ** -math.floor(math.log2(magnitude))


def prepare_keys(keys, key_mask=None, scale=None):
    """The search's operands for ``keys``: transposed, scaled into the safe range,
    with squared norms ``+inf`` where ``key_mask`` (C, K) is False so that those
    keys are never chosen. ``scale`` overrides the power of two chosen from the
    keys' own magnitude."""
    if scale is None:
        magnitude = 0.0
        if keys.numel():  # one pass, where abs().max() makes two
            low, high = torch.aminmax(keys)
            magnitude = max(-low.item(), high.item())
        scale = _power_of_two_scale(magnitude)
    scaled = keys if scale == 1.0 else keys * scale
    sq_norms = scaled.pow(2).sum(-1)
    if key_mask is not None:
        sq_norms = sq_norms.masked_fill(~key_mask, float("inf"))
    return PreparedKeys(
        scaled.transpose(1, 2).contiguous(), sq_norms.unsqueeze(1), scale, keys, key_mask
    )


def refresh_prepared_keys(prepared, rows):
    """``prepare_keys(prepared.keys)`` after the keys at flat ``rows`` (``c * K + k``)
    changed in place, the others as ``prepared`` has them: those rows are
    recomputed, with the same operations per element, in place. The power of
    two is checked on all keys (one pass): when it changes, or keys are masked,
    everything is prepared again. Key fitting moves a few keys per batch, so
    this saves preparing all of them (a transposed copy and the norms) each step.
    """
    keys = prepared.keys
    low, high = torch.aminmax(keys)
    scale = _power_of_two_scale(max(-low.item(), high.item()))
    if prepared.key_mask is not None or scale != prepared.scale:
        return prepare_keys(keys, prepared.key_mask)
    n_keys, key_dim = keys.shape[1], keys.shape[2]
    changed = keys.reshape(-1, key_dim).index_select(0, rows)
    if scale != 1.0:
        changed = changed * scale
    prepared.keys_t[rows // n_keys, :, rows % n_keys] = changed
    prepared.sq_norms.view(-1)[rows] = changed.pow(2).sum(-1)
    return prepared


def _scaled_heads(heads, prepared):
    """Heads times the keys' power of two; ValueError for heads that are not finite."""
    heads_max = heads.abs().max().item() if heads.numel() else 0.0
    if not math.isfinite(heads_max):
        raise ValueError(
            "The inputs are too large for float32 heads (the projection of X overflows "
            "beyond 3.4e38); rescale X, e.g. divide it by its largest absolute value."
        )
    return heads if prepared.scale == 1.0 else heads * prepared.scale


def first_min_index(distances, slice_size=MIN_SLICE):
    """``distances.min(-1).indices`` of a (..., K) block: the first index of each
    row's minimum, exactly (NaN included: the first NaN, as torch's min).

    On the CPU, torch's min with indices runs ~10x slower than ``amin`` (no
    indices) and took two thirds of the search's time. So: ``amin`` over
    slices of ``slice_size`` keys, the first slice that holds the row's
    minimum, then the first index of the minimum within that slice -- small
    min-with-indices only. The first slice reaching the minimum holds its
    first occurrence, so ties still go to the lowest index. Keys beyond the
    last whole slice are searched with a plain min and win only if strictly
    smaller.
    """
    n_keys = distances.shape[-1]
    n_slices = n_keys // slice_size
    if n_slices < 2:
        return distances.min(-1).indices
    whole = n_slices * slice_size
    slices = distances[..., :whole].unflatten(-1, (n_slices, slice_size))
    slice_min, first_slice = slices.amin(-1).min(-1, keepdim=True)
    rows = first_slice.unsqueeze(-1).expand(*first_slice.shape, slice_size)
    within = slices.gather(-2, rows).min(-1).indices
    codes = (first_slice * slice_size + within).squeeze(-1)
    if whole == n_keys:
        return codes
    rest_min, rest_index = distances[..., whole:].min(-1)
    slice_min = slice_min.squeeze(-1)
    rest_wins = (rest_min < slice_min) | (rest_min.isnan() & ~slice_min.isnan())
    return torch.where(rest_wins, rest_index + whole, codes)


def _plain_first_min(distances):
    """First index of each row's minimum on a GPU (``min``, not ``argmin``: the
    same first-index rule, faster)."""
    return distances.min(-1).indices


def _nearest_keys_float64(heads, prepared, rows_per_block=64):
    """The search in float64, for heads far beyond the keys' range, (n, C) int64.

    Such a head's ``h.k`` can overflow float32 although both are finite. Each
    row is searched on its own, so its codes never depend on the other rows.
    """
    keys_t, sq_norms = prepared.keys_t.double(), prepared.sq_norms.double()
    codes = []
    for start in range(0, heads.shape[0], rows_per_block):
        block = heads[start : start + rows_per_block].double().transpose(0, 1)
        codes.append(torch.baddbmm(sq_norms, block, keys_t, alpha=-2.0).min(-1).indices.T)
    return torch.cat(codes)


def nearest_keys(
    heads, keys, key_mask=None, chunk_bytes=DEFAULT_CHUNK_BYTES, prepared=None, batched=None,
    n_threads=None,
):
    """Index of the nearest key (L2) of each head, shape (N, C) int64.

    ``||h - k||^2 = ||h||^2 - 2 h.k + ||k||^2`` and the first term does not
    change the minimum, so each block of distances is one matrix product.
    Keys where ``key_mask`` (C, K) is False are never chosen. Ties go to the
    lowest key index. At most ``chunk_bytes`` of distances exist at a time.
    Keys of any finite float32 magnitude give the codes of unscaled
    arithmetic: keys and heads are multiplied by the power of two that brings
    the keys into ``[SAFE_MAGNITUDE_LOW, SAFE_MAGNITUDE_HIGH]`` (exact). Rows
    whose heads are still beyond ``SAFE_MAGNITUDE_HIGH`` are searched in
    float64, row by row, so no row's codes depend on the others.
    ``prepared`` is ``prepare_keys(keys, key_mask)`` when the caller has it;
    ``batched`` picks the block strategy (default: batched on GPUs only).
    On the CPU the codebooks are split over ``n_threads`` single-threaded
    workers (default: torch's setting in the calling thread).
    """
    n_samples, n_codebooks, _ = heads.shape
    if prepared is None:
        prepared = prepare_keys(keys, key_mask)
    heads = _scaled_heads(heads, prepared)
    keys_t, key_sq_norms = prepared.keys_t, prepared.sq_norms
    heads_by_codebook = heads.transpose(0, 1).contiguous()
    codes = torch.empty(n_codebooks, n_samples, dtype=torch.int64, device=heads.device)
    if batched is None:
        batched = heads.device.type != "cpu"
    group, rows = block_shape(n_codebooks, keys.shape[1], batched, chunk_bytes)
    # The two-stage minimum is for the CPU's slow min-with-indices; same codes.
    first_min = first_min_index if heads.device.type == "cpu" else _plain_first_min

    def search(codebooks):
        for c in range(codebooks.start, codebooks.stop, group):
            stop = min(c + group, codebooks.stop)
            norms, keys_c = key_sq_norms[c:stop], keys_t[c:stop]
            for start in range(0, n_samples, rows):
                block = heads_by_codebook[c:stop, start : start + rows]
                distances = torch.baddbmm(norms, block, keys_c, alpha=-2.0)
                codes[c:stop, start : start + rows] = first_min(distances)

    if batched:
        search(range(n_codebooks))
    else:
        split_over_threads(search, n_codebooks, n_threads)
    far = heads.abs().amax(dim=(1, 2)) > SAFE_MAGNITUDE_HIGH
    if far.any():
        codes[:, far] = _nearest_keys_float64(heads[far], prepared).T
    return codes.T


def count_usage(codes, n_keys, weights=None):
    """How often each key was fetched: (C, K) counts via one scatter-add."""
    n_codebooks = codes.shape[1]
    flat = flat_codes(codes, n_keys).reshape(-1)
    if weights is None:
        counts = torch.bincount(flat, minlength=n_codebooks * n_keys)
    else:
        per_fetch = weights.unsqueeze(1).expand(-1, n_codebooks).reshape(-1)
        counts = torch.zeros(n_codebooks * n_keys, dtype=weights.dtype, device=codes.device)
        counts.index_add_(0, flat, per_fetch)
    return counts.view(n_codebooks, n_keys)


def encode(
    inputs, projection, keys, key_mask=None, chunk_bytes=DEFAULT_CHUNK_BYTES, prepared=None
):
    """Codes of an (N, D) array or tensor: (N, C) int64 tensor on the keys' device.

    Rows go through in blocks of exactly ``ENCODE_BLOCK_ROWS`` (the last one
    padded by repeating its final row). Every call thus runs matrix products of
    the same shapes, so a sample's codes never depend on which other samples
    share its call: BLAS picks kernels, and so rounding, by matrix shape, and
    near-ties between keys would otherwise flip. Rows are converted to float32
    block by block, so a large float64 input is never copied whole.
    ``prepared`` is ``prepare_keys(keys, key_mask)`` when the caller encodes
    several chunks with the same keys. The search of each block is split over
    torch's threads; everything else runs on one (see :mod:`.threads`).
    """
    n_codebooks = keys.shape[0]
    device = keys.device
    n_samples = inputs.shape[0]
    n_threads = torch.get_num_threads()
    with single_threaded():
        codes = torch.empty(n_samples, n_codebooks, dtype=torch.int64, device=device)
        if prepared is None:
            prepared = prepare_keys(keys, key_mask)
        for start in range(0, n_samples, ENCODE_BLOCK_ROWS):
            block = torch.as_tensor(inputs[start : start + ENCODE_BLOCK_ROWS])
            block = block.to(device, torch.float32)
            n_rows = block.shape[0]
            if n_rows < ENCODE_BLOCK_ROWS:
                block = torch.cat([block, block[-1:].expand(ENCODE_BLOCK_ROWS - n_rows, -1)])
            heads = project(block, projection, n_codebooks)
            block_codes = nearest_keys(
                heads, keys, chunk_bytes=chunk_bytes, prepared=prepared, n_threads=n_threads
            )
            codes[start : start + n_rows] = block_codes[:n_rows]
    return codes


def flat_codes(codes, n_keys):
    """(N, C) per-codebook key indices -> (N, C) row indices of a (C * K, ...) table."""
    offsets = n_keys * torch.arange(codes.shape[1], device=codes.device, dtype=codes.dtype)
    return codes + offsets
