"""The pure torch engine against slow references: projection into heads, the
nearest-key search and codes, EMA keys, value rules (counting and SGD) and decoders.

The estimators built on it are tested in test_codebook.py and test_classifier*.py.
"""

import numpy as np
import pytest
import torch
from _helpers import reference_counts
from _strategies import PROPERTY, data_arrays, fitted_codebooks
from hypothesis import event, given
from hypothesis import strategies as st

from skkvb.engine.codes import (
    CPU_BLOCK_BYTES,
    block_shape,
    count_usage,
    encode,
    first_min_index,
    flat_codes,
    nearest_keys,
    prepare_keys,
)
from skkvb.engine.heads import head_shape, make_projection, project
from skkvb.engine.keys import (
    EMAState,
    ema_update,
    init_ema_state,
    reseed_unused_keys,
    smoothed_counts,
)
from skkvb.engine.seeding import torch_generator
from skkvb.engine.values import (
    add_counts,
    count_values,
    decode,
    decode_counts,
    decode_stable,
    sgd_step,
)
from skkvb.engine.values import sgd as sgd_module
from skkvb.engine.values.sgd import smoothed_targets


def brute_force_codes(heads, keys, key_mask=None):
    """Reference search: the full (N, C, K) tensor of direct squared differences."""
    distances = ((heads.unsqueeze(2) - keys.unsqueeze(0)) ** 2).sum(-1).double()
    if key_mask is not None:
        distances = distances.masked_fill(~key_mask.unsqueeze(0), float("inf"))
    return distances, distances.argmin(-1)


# ----------------------------------------------------------------- projection


def test_gaussian_projection_has_unit_columns_and_is_seeded():
    a = make_projection("gaussian", 50, 6, 4, np.random.RandomState(3))
    b = make_projection("gaussian", 50, 6, 4, np.random.RandomState(3))
    c = make_projection("gaussian", 50, 6, 4, np.random.RandomState(4))
    assert a.shape == (50, 24) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=0), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_partition_projection_splits_features_into_chunks():
    X = torch.arange(14.0).view(2, 7)
    matrix = torch.as_tensor(make_projection("partition", 7, 3, 99, None))
    assert head_shape("partition", 7, 3, 99) == (3, 3)
    heads = project(X, matrix, 3)
    # array_split of 7 features into 3 chunks: 3 + 2 + 2, zero-padded to 3.
    np.testing.assert_array_equal(heads[0].numpy(), [[0, 1, 2], [3, 4, 0], [5, 6, 0]])


def test_none_projection_is_one_codebook_on_the_raw_input():
    X = torch.randn(5, 4)
    matrix = torch.as_tensor(make_projection("none", 4, 10, 3, None))
    assert head_shape("none", 4, 10, 3) == (1, 4)
    np.testing.assert_array_equal(project(X, matrix, 1)[:, 0].numpy(), X.numpy())


def test_unknown_projection_names_the_options():
    with pytest.raises(ValueError, match="projection must be one of"):
        head_shape("pca", 4, 2, 2)


# --------------------------------------------------------- search and codes


@pytest.mark.parametrize("batched", [False, True], ids=["cpu-blocks", "gpu-blocks"])
@pytest.mark.parametrize("chunk_bytes", [1, 4096, 2**20, 2**30])
def test_chunked_search_equals_brute_force(chunk_bytes, batched):
    gen = torch.Generator().manual_seed(0)
    heads = torch.randn(300, 5, 3, generator=gen)
    keys = torch.randn(5, 40, 3, generator=gen)
    distances, expected = brute_force_codes(heads, keys)
    codes = nearest_keys(heads, keys, chunk_bytes=chunk_bytes, batched=batched)
    # Exactly the brute-force codes wherever the two best keys are not within
    # float32 rounding of each other (all of them, on this random data).
    best_two = distances.topk(2, dim=-1, largest=False).values
    clear = (best_two[..., 1] - best_two[..., 0]) > 1e-4
    assert clear.float().mean() > 0.99
    np.testing.assert_array_equal(codes[clear].numpy(), expected[clear].numpy())
    chosen = distances.gather(-1, codes.unsqueeze(-1)).squeeze(-1)
    np.testing.assert_allclose(chosen.numpy(), distances.min(-1).values.numpy(), atol=1e-4)


@pytest.mark.parametrize("batched", [False, True], ids=["cpu-blocks", "gpu-blocks"])
def test_search_never_builds_the_full_distance_tensor(monkeypatch, batched):
    """Every block of distances stays within the chunk budget."""
    seen = []
    real_baddbmm = torch.baddbmm

    def spy(*args, **kwargs):
        out = real_baddbmm(*args, **kwargs)
        seen.append(out.numel() * out.element_size())
        return out

    monkeypatch.setattr(torch, "baddbmm", spy)
    heads, keys = torch.randn(500, 8, 2), torch.randn(8, 64, 2)
    nearest_keys(heads, keys, chunk_bytes=8 * 64 * 4 * 10, batched=batched)
    assert max(seen) <= 8 * 64 * 4 * 10 < 500 * 8 * 64 * 4


def test_search_split_over_threads_gives_the_single_threaded_codes():
    gen = torch.Generator().manual_seed(2)
    heads, keys = torch.randn(300, 7, 3, generator=gen), torch.randn(7, 50, 3, generator=gen)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = nearest_keys(heads, keys)
        torch.set_num_threads(3)
        split = nearest_keys(heads, keys)
        assert torch.get_num_threads() == 3, "workers do not change the caller's setting"
    finally:
        torch.set_num_threads(previous)
    np.testing.assert_array_equal(split.numpy(), single.numpy())


def test_gpu_blocks_span_all_codebooks_within_the_budget():
    assert block_shape(256, 4096, True, 256 * 2**20) == (256, 64)
    assert block_shape(256, 4096, True, 2**20) == (64, 1)
    group, rows = block_shape(256, 4096, False, 256 * 2**20)
    assert group == 1 and rows * 4096 * 4 <= CPU_BLOCK_BYTES


def test_masked_search_equals_brute_force_over_allowed_keys():
    gen = torch.Generator().manual_seed(1)
    heads, keys = torch.randn(200, 4, 2, generator=gen), torch.randn(4, 30, 2, generator=gen)
    key_mask = torch.rand(4, 30, generator=gen) > 0.7
    key_mask[:, 0] = True
    _, expected = brute_force_codes(heads, keys, key_mask)
    codes = nearest_keys(heads, keys, key_mask)
    assert key_mask.gather(1, codes.T).all()
    np.testing.assert_array_equal(codes.numpy(), expected.numpy())


def test_ties_go_to_the_lowest_key_index():
    keys = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 0.0]]])
    heads = torch.tensor([[[0.1, 0.0]], [[0.9, 0.0]]])
    assert nearest_keys(heads, keys)[:, 0].tolist() == [1, 0]


@pytest.mark.parametrize("n_keys", [1, 5, 127, 128, 129, 256, 300, 1257])
def test_first_min_index_is_torchs_first_minimum_exactly(n_keys):
    """Ties (many equal values), keys beyond the last whole slice, all-inf rows
    (every key masked) and NaN: the index ``min(-1)`` gives, bit for bit."""
    gen = torch.Generator().manual_seed(n_keys)
    blocks = [
        torch.randint(0, 4, (2, 9, n_keys), generator=gen).float(),
        torch.randn(2, 9, n_keys, generator=gen),
        torch.full((1, 3, n_keys), float("inf")),
    ]
    with_nan = torch.randn(2, 9, n_keys, generator=gen)
    with_nan[0, :, -1] = float("nan")
    with_nan[1, :, n_keys // 2] = float("nan")
    for distances in blocks + [with_nan]:
        expected = distances.min(-1).indices
        np.testing.assert_array_equal(first_min_index(distances).numpy(), expected.numpy())


def test_cpu_search_gives_the_codes_of_one_product_and_min_per_block():
    """The search's codes are those of its blocks' plain ``baddbmm(...).min(-1)``
    -- the same products, so the same codes bit for bit, near-ties included
    (near-duplicate keys here)."""
    gen = torch.Generator().manual_seed(3)
    keys = torch.randn(3, 512, 6, generator=gen)
    keys[:, 256:] = keys[:, :256] + 1e-6 * torch.randn(3, 256, 6, generator=gen)
    heads = keys[:, torch.randint(512, (200,), generator=gen)].transpose(0, 1) + 1e-3
    prepared = prepare_keys(keys)
    _, rows = block_shape(3, 512, batched=False)
    expected = torch.cat(
        [
            torch.baddbmm(
                prepared.sq_norms, heads[start : start + rows].transpose(0, 1),
                prepared.keys_t, alpha=-2.0,
            ).min(-1).indices.T
            for start in range(0, 200, rows)
        ]
    )
    codes = nearest_keys(heads, keys)
    np.testing.assert_array_equal(codes.numpy(), expected.numpy())
    # Against exact float64 distances: the chosen key is the nearest up to the
    # float32 rounding of ||k||^2 - 2 h.k, the expression the search minimises.
    distances, _ = brute_force_codes(heads.double(), keys.double())
    chosen = distances.gather(-1, codes.unsqueeze(-1)).squeeze(-1)
    magnitude = heads.double().pow(2).sum(-1) + keys.double().pow(2).sum(-1).amax(-1)
    rounding = 8 * np.finfo(np.float32).eps * magnitude
    assert (chosen - distances.min(-1).values <= rounding).all()
    assert (codes != distances.argmin(-1)).any(), "the data has near-ties"


def test_count_usage_is_a_scatter_add_of_codes():
    codes = torch.tensor([[0, 2], [0, 1], [3, 2]])
    np.testing.assert_array_equal(count_usage(codes, 4).numpy(), [[2, 0, 0, 1], [0, 1, 2, 0]])
    weighted = count_usage(codes, 4, weights=torch.tensor([1.0, 0.5, 2.0]))
    np.testing.assert_allclose(weighted.numpy(), [[1.5, 0, 0, 2], [0, 0.5, 3, 0]])


@PROPERTY
@given(data=st.data())
def test_the_search_memory_budget_changes_codes_only_between_keys_tied_within_rounding(data):
    """The engine's ``chunk_bytes`` sets the shape of the distance blocks, and
    BLAS rounds differently for different shapes: keys whose distances to a head
    are equal to float32 precision (near-duplicate keys) may then swap. Every
    public entry point encodes through fixed-shape blocks, which is why codes do
    not depend on the other samples of a call (test_codebook.py); this bounds
    what a different budget can do."""
    n_features = data.draw(st.integers(1, 6), label="n_features")
    X = data.draw(data_arrays(st.integers(1, 60), n_features), label="X")
    codebook = data.draw(fitted_codebooks(n_features, X), label="codebook")
    projection, keys = (torch.as_tensor(a) for a in (codebook.projection_, codebook.keys_))
    expected = encode(X, projection, keys).numpy()
    chunk_bytes = data.draw(st.integers(1, 2**16), label="chunk_bytes")
    codes = encode(X, projection, keys, chunk_bytes=chunk_bytes).numpy()

    heads = (X.astype(np.float32) @ codebook.projection_).reshape(len(X), len(keys), -1)
    rows, books = np.nonzero(codes != expected)
    event(f"codes changed by the budget: {len(rows) > 0}")
    for row, book in zip(rows, books):
        head = heads[row, book].astype(np.float64)
        chosen = [codebook.keys_[book, choice[row, book]] for choice in (codes, expected)]
        chosen = [key.astype(np.float64) for key in chosen]
        exact = [((head - key) ** 2).sum() for key in chosen]
        # float32 error of ||k||^2 - 2 h.k, the expression the search minimises
        magnitude = max((head**2).sum() + (key**2).sum() for key in chosen)
        rounding = 8 * np.finfo(np.float32).eps * magnitude
        assert abs(exact[0] - exact[1]) <= rounding, (row, book, exact)


# --------------------------------------------------------------------- keys


def test_ema_counts_start_at_one_and_keys_at_heads_of_the_first_batch():
    heads = torch.randn(50, 3, 2)
    state = init_ema_state(heads, 8, torch_generator(0))
    assert torch.equal(state.counts, torch.ones(3, 8))
    assert torch.equal(state.sums, state.keys)
    for c in range(3):
        for k in range(8):
            assert (state.keys[c, k] == heads[:, c]).all(-1).any()


def test_ema_update_matches_the_formula():
    gen = torch.Generator().manual_seed(0)
    heads = torch.randn(64, 2, 3, generator=gen)
    state = init_ema_state(heads, 6, torch_generator(0))
    before = init_ema_state(heads, 6, torch_generator(0))
    state.keys[:, 5] = before.keys[:, 5] = 50.0  # far away: never picked
    codes = ema_update(state, heads, 0.9, 0.0, torch_generator(1))
    assert not (codes == 5).any()
    for c in range(2):
        for k in range(6):
            hit = codes[:, c] == k
            n = 0.9 * before.counts[c, k] + 0.1 * hit.sum()
            m = 0.9 * before.sums[c, k] + 0.1 * heads[hit, c].sum(0)
            total = 0.9 * before.counts[c].sum() + 0.1 * 64
            smoothed = (n + 1e-5) / (total + 6 * 1e-5) * total
            torch.testing.assert_close(state.counts[c, k], n)
            if hit.any():
                torch.testing.assert_close(state.keys[c, k], m / smoothed)
            else:  # keys no head picked stay where they were
                torch.testing.assert_close(state.keys[c, k], before.keys[c, k])


def dense_ema_step(state, heads, codes, decay, n_keys):
    """Reference EMA step over the whole table: every sum decays, every key is
    recomputed and only the hit ones kept."""
    n_codebooks, key_dim = heads.shape[1], heads.shape[2]
    flat = flat_codes(codes, n_keys).reshape(-1)
    counts = torch.bincount(flat, minlength=n_codebooks * n_keys).float()
    sums = torch.zeros(n_codebooks * n_keys, key_dim)
    sums.index_add_(0, flat, heads.reshape(-1, key_dim))
    new_counts = state.counts * decay + 0.0
    new_counts.add_(counts.view(n_codebooks, n_keys), alpha=1 - decay)
    new_sums = state.sums * decay + 0.0
    new_sums.add_(sums.view(n_codebooks, n_keys, key_dim), alpha=1 - decay)
    hit = (counts > 0).view(n_codebooks, n_keys, 1)
    keys = torch.where(hit, new_sums / smoothed_counts(new_counts).unsqueeze(-1), state.keys)
    return EMAState(keys=keys, counts=new_counts, sums=new_sums)


def test_ema_update_equals_the_dense_step_bit_for_bit():
    """Only the rows a batch hits are updated, with the dense step's operations."""
    gen = torch.Generator().manual_seed(5)
    state = init_ema_state(torch.randn(64, 4, 3, generator=gen), 40, torch_generator(0))
    for step in range(4):
        heads = torch.randn(64, 4, 3, generator=gen) * (step + 1)
        before = EMAState(state.keys.clone(), state.counts.clone(), state.sums.clone())
        codes = ema_update(state, heads, 0.9, 0.0, torch_generator(step))
        expected = dense_ema_step(before, heads, codes, 0.9, 40)
        for name in ("keys", "counts", "sums"):
            np.testing.assert_array_equal(
                getattr(state, name).numpy(), getattr(expected, name).numpy(), err_msg=name
            )


def test_ema_update_keeps_the_search_operands_of_its_keys_exactly():
    """ema_update refreshes the moved and revived keys' prepared operands in place;
    they must equal those prepared from scratch, also when the power of two
    of the keys' magnitude changes between steps."""
    gen = torch.Generator().manual_seed(6)
    state = init_ema_state(torch.randn(64, 4, 3, generator=gen), 40, torch_generator(0))
    for step, magnitude in enumerate([1.0, 1.0, 1e-30, 1e-30, 1e30, 1.0]):
        heads = torch.randn(64, 4, 3, generator=gen) * magnitude
        ema_update(state, heads, 0.5, 0.3, torch_generator(step))  # dead keys revived too
        fresh = prepare_keys(state.keys)
        assert state.prepared.scale == fresh.scale
        for name in ("keys_t", "sq_norms"):
            np.testing.assert_array_equal(
                getattr(state.prepared, name).numpy(), getattr(fresh, name).numpy(),
                err_msg=f"{name}, step {step}",
            )


def test_ema_update_raises_when_the_sums_overflow():
    heads = torch.full((8, 1, 2), 3e38)
    state = init_ema_state(heads, 2, torch_generator(0))
    with pytest.raises(ValueError, match="too large for the float32 sums"):
        ema_update(state, torch.cat([heads, heads]), 0.5, 0.0, torch_generator(1))


def test_dead_keys_are_revived_with_their_ema_state_reset():
    heads = torch.randn(256, 1, 2) * 0.01
    state = init_ema_state(heads, 4, torch_generator(0))
    # Key 3 sits far away: no head ever picks it, and its count has decayed.
    state.keys[0, 3] = torch.tensor([100.0, 100.0])
    state.sums[0, 3] = state.keys[0, 3]
    state.counts[0, 3] = 1e-4
    ema_update(state, heads, 0.95, 0.1, torch_generator(1))
    revived = state.keys[0, 3]
    assert (revived == heads[:, 0]).all(-1).any(), "re-seeded at a head of the batch"
    assert state.counts[0, 3] == 1.0 and torch.equal(state.sums[0, 3], revived)
    # With the state reset, the next step keeps it where it was put instead of
    # pulling it back towards (100, 100).
    ema_update(state, heads, 0.95, 0.0, torch_generator(2))
    assert state.keys[0, 3].abs().max() < 1.0


def test_keys_stay_finite_and_bounded_when_most_keys_are_rarely_hit():
    gen = torch.Generator().manual_seed(0)
    state = None
    for step in range(100):
        heads = torch.rand(32, 4, 3, generator=gen)  # 32 heads for 512 keys
        if state is None:
            state = init_ema_state(heads, 512, torch_generator(0))
        ema_update(state, heads, 0.95, 0.1, torch_generator(step))
    assert torch.isfinite(state.keys).all()
    assert state.keys.min() >= -1e-3 and state.keys.max() <= 1 + 1e-3


# ------------------------------------------------------------------- values


def test_engine_counts_and_decoder_match_slow_references():
    rng = np.random.RandomState(0)
    n_samples, n_codebooks, n_keys, n_classes = 50, 4, 6, 3
    codes = rng.randint(n_keys, size=(n_samples, n_codebooks))
    labels = rng.randint(n_classes, size=n_samples)
    weights = rng.choice([0.0, 0.5, 1.0, 2.0], size=n_samples)
    rows = flat_codes(torch.as_tensor(codes), n_keys)
    counts = torch.zeros(n_codebooks * n_keys, n_classes)
    add_counts(counts, rows, torch.as_tensor(labels), torch.as_tensor(weights, dtype=torch.float32))
    expected = reference_counts(codes, labels, n_keys, n_classes, weights)
    np.testing.assert_array_equal(counts.numpy().reshape(expected.shape), expected)

    a = 0.5
    values = np.log((expected + a) / (expected.sum(-1, keepdims=True) + a * n_classes))
    np.testing.assert_allclose(
        count_values(counts, a).numpy().reshape(values.shape), values, rtol=1e-6
    )
    logits = values[np.arange(n_codebooks), codes].mean(1)  # (N, n_classes)
    np.testing.assert_allclose(decode_counts(counts, rows, a).numpy(), logits, rtol=1e-5)



@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_sparse_sgd_step_equals_dense_autograd_and_torch_sgd(weighted, grouped, monkeypatch):
    """Also with the codebooks gathered and scattered in groups (a wide step)."""
    if grouped:  # blocks of 2 codebooks: 3 groups of 6
        monkeypatch.setattr(sgd_module, "STEP_BLOCK_BYTES", 2 * 4 * 32 * 4)
    gen = torch.Generator().manual_seed(0)
    n_codebooks, n_keys, n_outputs, n_batch = 6, 5, 4, 32
    codes = torch.randint(n_keys, (n_batch, n_codebooks), generator=gen)  # many duplicates
    labels = torch.randint(n_outputs, (n_batch,), generator=gen)
    weights = torch.rand(n_batch, generator=gen) if weighted else None
    rows = flat_codes(codes, n_keys)
    values = torch.randn(n_codebooks * n_keys, n_outputs, generator=gen)

    dense = torch.nn.Parameter(values.clone())
    optimizer = torch.optim.SGD([dense], lr=0.7)
    logits = dense[rows].mean(1)
    losses = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1, reduction="none")
    loss = (losses * weights).mean() if weighted else losses.mean()
    loss.backward()
    optimizer.step()

    sparse = values.clone()
    for _ in range(1):
        sgd_step(sparse, rows, labels, 0.7, 0.1, weights)
    torch.testing.assert_close(sparse, dense.detach(), rtol=1e-5, atol=1e-6)


def test_sgd_step_sums_duplicate_rows_as_a_sample_major_scatter_bit_for_bit():
    """The step scatters codebook by codebook; each row still gets its samples'
    steps in batch order, so the table equals a sample-major scatter's exactly."""
    gen = torch.Generator().manual_seed(4)
    n_batch, n_codebooks, n_keys, n_outputs = 64, 5, 6, 3  # many duplicate rows
    values = torch.randn(n_codebooks * n_keys, n_outputs, generator=gen)
    expected = values.clone()
    for _ in range(3):
        rows = flat_codes(torch.randint(n_keys, (n_batch, n_codebooks), generator=gen), n_keys)
        labels = torch.randint(n_outputs, (n_batch,), generator=gen)
        probabilities = torch.softmax(decode(expected, rows), dim=1)
        grad = probabilities - smoothed_targets(labels, n_outputs, 0.1)
        step = grad.mul_(-0.7 / (n_batch * n_codebooks))
        step = step.unsqueeze(1).expand(n_batch, n_codebooks, n_outputs).reshape(-1, n_outputs)
        expected.index_put_((rows.reshape(-1),), step, accumulate=True)
        sgd_step(values, rows, labels, 0.7, 0.1)
        np.testing.assert_array_equal(values.numpy(), expected.numpy())


@pytest.mark.parametrize("grouped", [False, True])
def test_sgd_step_touches_only_fetched_rows(grouped, monkeypatch):
    if grouped:  # one codebook at a time
        monkeypatch.setattr(sgd_module, "STEP_BLOCK_BYTES", 1)
    values = torch.randn(20, 3)
    rows = torch.tensor([[0, 7], [0, 12]])
    before = values.clone()
    sgd_step(values, rows, torch.tensor([1, 2]), 5.0, 0.1)
    changed = (values != before).any(1).nonzero().flatten().tolist()
    assert changed == [0, 7, 12]


def test_decoder_is_the_mean_of_fetched_values():
    values = torch.zeros(2 * 3, 2)
    values[:] = torch.arange(12.0).view(6, 2)
    rows = flat_codes(torch.tensor([[1, 2]]), 3)
    np.testing.assert_allclose(decode(values, rows).numpy(), [[(2 + 10) / 2, (3 + 11) / 2]])


def test_stable_decoder_is_the_mean_and_does_not_depend_on_the_number_of_outputs():
    gen = torch.Generator().manual_seed(3)
    values = torch.randn(40, 7, generator=gen)
    rows = flat_codes(torch.randint(5, (30, 8), generator=gen), 5)
    torch.testing.assert_close(decode_stable(values, rows), decode(values, rows))
    narrower = decode_stable(values[:, :3].contiguous(), rows)
    assert torch.equal(narrower, decode_stable(values, rows)[:, :3])


def test_reseeding_moves_only_unused_keys_to_the_means_of_their_heads():
    generator = torch.Generator().manual_seed(0)
    heads = torch.randn(200, 3, 4, generator=generator) + 5.0  # far from the keys
    keys = torch.randn(3, 16, 4, generator=generator)
    unused = torch.zeros(3, 16, dtype=torch.bool)
    unused[:, 8:] = True
    moved = reseed_unused_keys(keys, unused, heads, torch_generator(1), n_steps=50)
    torch.testing.assert_close(moved[~unused], keys[~unused], rtol=0, atol=0)
    assert not torch.equal(keys, moved) and torch.equal(keys, keys.clone())
    # Converged (50 steps): every unused key that attracts heads is their mean.
    codes = nearest_keys(heads, moved)
    for c in range(3):
        for k in range(8, 16):
            mine = heads[codes[:, c] == k, c]
            if len(mine):
                torch.testing.assert_close(moved[c, k], mine.mean(0), rtol=1e-4, atol=1e-4)
    # Heads far from every used key end on unused (re-seeded) keys.
    assert (codes >= 8).all()
