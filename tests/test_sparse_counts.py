"""Counting values in the sparse store give what the dense table gives.

The store is chosen by ``DENSE_LIMIT_BYTES`` (skkvb.engine.values.count);
these tests set it to force one store or the other. Counts must be equal bit
for bit (integer weights), logits up to float32 rounding, predictions equal.
"""

import pickle

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.frozen import FrozenEstimator

import skkvb.dask
from skkvb import KeyCodebook, KeyValueBottleneckClassifier
from skkvb.engine.values import (
    CountValues,
    SparseCounts,
    add_counts,
    count,
    sparse_counts,
)

X_DIGITS, Y_DIGITS = load_digits(return_X_y=True)
KEYS = FrozenEstimator(
    KeyCodebook(n_codebooks=8, n_keys=16, key_dim=4, random_state=0).fit(X_DIGITS)
)
N_ROWS = 8 * 16
DENSE, SPARSE = float("inf"), 0


@pytest.fixture
def limit(monkeypatch):
    """Set the dense-table limit, and with it the store new models choose."""

    def set_limit(value):
        monkeypatch.setattr(count, "DENSE_LIMIT_BYTES", value)

    return set_limit


def fitted(limit, store, *args, how="fit", **params):
    limit(store)
    clf = KeyValueBottleneckClassifier(codebook=KEYS, random_state=0, **params)
    if how == "fit":
        return clf.fit(*args)
    X, y, *weights = args
    for batch in np.array_split(np.argsort(y, kind="stable"), 7):  # classes arrive in order
        clf.partial_fit(X[batch], y[batch], sample_weight=weights[0][batch] if weights else None)
    return clf


def assert_same_arrays(store, other):
    for name, array in store.arrays().items():
        assert torch.equal(array, other.arrays()[name]), name


def assert_same_model(dense, sparse, X=X_DIGITS):
    assert dense._value_model.store == "dense"
    assert sparse._value_model.store == "sparse"
    np.testing.assert_array_equal(dense.classes_, sparse.classes_)
    np.testing.assert_array_equal(dense.class_counts_, sparse.class_counts_)
    np.testing.assert_allclose(
        sparse.decision_function(X), dense.decision_function(X), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_array_equal(sparse.predict(X), dense.predict(X))
    np.testing.assert_allclose(sparse.values_, dense.values_, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sparse.temperature_, dense.temperature_, rtol=1e-4)
    np.testing.assert_allclose(
        sparse.predict_proba(X), dense.predict_proba(X), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(sparse.score_samples(X), dense.score_samples(X), rtol=1e-12)


@pytest.mark.parametrize("how", ["fit", "stream"])
@pytest.mark.parametrize(
    "params",
    [{}, {"class_weight": "balanced"}, {"class_weight": {3: 2.5, 7: 0.0}},
     {"mask_unused_keys": False}, {"count_smoothing": 2.0}],
)
def test_sparse_counts_predict_as_dense_counts(limit, how, params):
    dense = fitted(limit, DENSE, X_DIGITS, Y_DIGITS, how=how, **params)
    sparse = fitted(limit, SPARSE, X_DIGITS, Y_DIGITS, how=how, **params)
    assert_same_model(dense, sparse)


@pytest.mark.parametrize("how", ["fit", "stream"])
def test_sample_weights(limit, how):
    weights = np.random.RandomState(0).randint(0, 4, size=len(Y_DIGITS)).astype(float)
    dense = fitted(limit, DENSE, X_DIGITS, Y_DIGITS, weights, how=how)
    sparse = fitted(limit, SPARSE, X_DIGITS, Y_DIGITS, weights, how=how)
    assert_same_model(dense, sparse)
    repeated = np.repeat(np.arange(len(Y_DIGITS)), weights.astype(int))
    copies = fitted(limit, SPARSE, X_DIGITS[repeated], Y_DIGITS[repeated], how=how)
    np.testing.assert_array_equal(copies.class_counts_, sparse.class_counts_)
    np.testing.assert_array_equal(copies.decision_function(X_DIGITS),
                                  sparse.decision_function(X_DIGITS))


def test_non_integer_weights_count_up_to_rounding(limit):
    weights = np.random.RandomState(1).uniform(0, 3, size=len(Y_DIGITS))
    dense = fitted(limit, DENSE, X_DIGITS, Y_DIGITS, weights)
    sparse = fitted(limit, SPARSE, X_DIGITS, Y_DIGITS, weights)
    np.testing.assert_allclose(sparse.class_counts_, dense.class_counts_, rtol=1e-5)
    np.testing.assert_allclose(
        sparse.decision_function(X_DIGITS), dense.decision_function(X_DIGITS), atol=1e-5
    )


def test_a_growing_class_set_switches_from_dense_to_sparse_mid_stream(limit):
    dense = fitted(limit, DENSE, X_DIGITS, Y_DIGITS, how="stream")
    limit(N_ROWS * 4 * 4)  # dense up to four classes
    switching = KeyValueBottleneckClassifier(codebook=KEYS, random_state=0)
    stores = []
    for batch in np.array_split(np.argsort(Y_DIGITS, kind="stable"), 10):
        switching.partial_fit(X_DIGITS[batch], Y_DIGITS[batch])
        stores.append((len(switching.classes_), switching._value_model.store))
    assert [store for _, store in stores] == [
        "dense" if n_classes <= 4 else "sparse" for n_classes, _ in stores
    ]
    assert stores[-1] == (10, "sparse")
    assert_same_model(dense, switching)


def test_order_and_split_do_not_change_the_store(limit):
    limit(SPARSE)
    order = np.random.RandomState(0).permutation(len(Y_DIGITS))
    one = KeyValueBottleneckClassifier(codebook=KEYS).fit(X_DIGITS[order], Y_DIGITS[order])
    streamed = fitted(limit, SPARSE, X_DIGITS, Y_DIGITS, how="stream")
    assert_same_arrays(one._value_model.sparse, streamed._value_model.sparse)


def test_memory_grows_with_the_pairs_seen_not_with_the_classes(limit):
    """Stored entries are exactly the distinct (key, class) pairs of positive weight."""
    clf = fitted(limit, SPARSE, X_DIGITS, Y_DIGITS, how="stream")
    model = clf._value_model
    codes = KEYS.transform(X_DIGITS)
    rows = codes + 16 * np.arange(8)
    pairs = np.unique((rows * 10 + Y_DIGITS[:, None]).reshape(-1))
    assert model.sparse.n_entries == len(pairs) == np.count_nonzero(clf.class_counts_)
    # One chunk of 16 rows per codebook: its int64 offsets, then 6 bytes a pair.
    assert model.storage_bytes == 8 * (16 + 1) * 8 + len(pairs) * (2 + 4)
    # With 1,000 classes given upfront, the same samples store the same pairs.
    limit(SPARSE)
    many = KeyValueBottleneckClassifier(codebook=KEYS)
    many.partial_fit(X_DIGITS, Y_DIGITS, classes=np.arange(1000))
    assert many._value_model.sparse.n_entries == len(pairs)
    assert many._value_model.storage_bytes == model.storage_bytes < N_ROWS * 1000 * 4


def test_unlearning_equals_fitting_without_the_samples(limit):
    keep = Y_DIGITS != 3
    keep[::5] = True
    sparse = fitted(limit, SPARSE, X_DIGITS, Y_DIGITS, how="stream")
    sparse.unlearn(X_DIGITS[~keep], Y_DIGITS[~keep])
    never = fitted(limit, SPARSE, X_DIGITS[keep], Y_DIGITS[keep])
    assert_same_arrays(sparse._value_model.sparse, never._value_model.sparse)
    np.testing.assert_array_equal(sparse.predict_proba(X_DIGITS), never.predict_proba(X_DIGITS))
    dense = fitted(limit, DENSE, X_DIGITS[keep], Y_DIGITS[keep])
    assert_same_model(dense, sparse)


def test_unlearning_a_whole_class_drops_its_column(limit):
    sparse = fitted(limit, SPARSE, X_DIGITS, Y_DIGITS)
    sparse.unlearn(X_DIGITS[Y_DIGITS == 4], Y_DIGITS[Y_DIGITS == 4])
    dense = fitted(limit, DENSE, X_DIGITS[Y_DIGITS != 4], Y_DIGITS[Y_DIGITS != 4])
    assert_same_model(dense, sparse)


def test_samples_never_learned_raise_and_leave_the_model_as_it_was(limit):
    sparse = fitted(limit, SPARSE, X_DIGITS[Y_DIGITS < 5], Y_DIGITS[Y_DIGITS < 5])
    before = sparse.decision_function(X_DIGITS)
    store = sparse._value_model.sparse
    with pytest.raises(ValueError, match="below zero"):
        sparse.unlearn(X_DIGITS[Y_DIGITS == 5][:3] + 50, np.zeros(3, dtype=int))
    assert sparse._value_model.sparse is store
    np.testing.assert_array_equal(sparse.decision_function(X_DIGITS), before)


def test_a_failed_partial_fit_leaves_the_store_as_it_was(limit, monkeypatch):
    clf = fitted(limit, SPARSE, X_DIGITS[:500], Y_DIGITS[:500], how="stream")
    before = clf.decision_function(X_DIGITS)
    store = clf._value_model.sparse

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(clf._calibration), "add", fail)
    with pytest.raises(KeyboardInterrupt):
        clf.partial_fit(X_DIGITS[500:], Y_DIGITS[500:])
    assert clf._value_model.sparse is store
    np.testing.assert_array_equal(clf.decision_function(X_DIGITS), before)


def test_pickle_round_trip(limit):
    sparse = fitted(limit, SPARSE, X_DIGITS, Y_DIGITS, how="stream")
    loaded = pickle.loads(pickle.dumps(sparse))
    assert loaded._value_model.store == "sparse"
    np.testing.assert_array_equal(loaded.predict_proba(X_DIGITS), sparse.predict_proba(X_DIGITS))
    loaded.partial_fit(X_DIGITS[:100], Y_DIGITS[:100])
    sparse.partial_fit(X_DIGITS[:100], Y_DIGITS[:100])
    np.testing.assert_array_equal(loaded.class_counts_, sparse.class_counts_)


def test_a_model_pickled_before_the_sparse_store_existed_loads_dense(limit):
    dense = fitted(limit, DENSE, X_DIGITS, Y_DIGITS, how="stream")  # a growing label set
    state = dense.__getstate__()
    del state["_value_model"].sparse, state["_value_model"].store_rule  # the old layout
    loaded = KeyValueBottleneckClassifier.__new__(KeyValueBottleneckClassifier)
    loaded.__setstate__(state)
    assert loaded._value_model.store == "dense"
    np.testing.assert_array_equal(loaded.predict_proba(X_DIGITS), dense.predict_proba(X_DIGITS))
    limit(N_ROWS * 4 * 10)  # the next class crosses the limit
    loaded.partial_fit(X_DIGITS[:5], np.full(5, 10))
    assert loaded._value_model.store == "sparse"


def test_a_corrupted_sparse_store_fails_its_digest(limit):
    state = fitted(limit, SPARSE, X_DIGITS, Y_DIGITS).__getstate__()
    state["_value_model"].sparse.chunks[0][2][0] += 1
    with pytest.raises(ValueError, match="digest"):
        KeyValueBottleneckClassifier().__setstate__(state)


def test_dask_fit_merges_into_the_sparse_store(limit):
    da = pytest.importorskip("dask.array")
    import dask

    limit(SPARSE)
    with dask.config.set(scheduler="synchronous"):
        X = da.from_array(X_DIGITS, chunks=(400, -1))
        y = da.from_array(Y_DIGITS, chunks=400)
        merged = skkvb.dask.fit(KeyValueBottleneckClassifier(codebook=KEYS), X, y)
    assert_same_model(fitted(limit, DENSE, X_DIGITS, Y_DIGITS), merged)


# ------------------------------------------------------------ the engine


def random_batch(seed, n_samples=50, n_classes=6):
    rng = np.random.RandomState(seed)
    rows = torch.as_tensor(rng.randint(16, size=(n_samples, 8)) + 16 * np.arange(8))
    return rows, torch.as_tensor(rng.randint(n_classes, size=n_samples))


@pytest.mark.parametrize("chunk_rows", [None, 16, 5])
@pytest.mark.parametrize("slices", [False, True])
def test_store_equals_the_dense_table_through_adds_and_removals(slices, chunk_rows, monkeypatch):
    """One chunk, a chunk per codebook, and chunks across codebooks (the last
    one shorter) hold the same counts and read the same logits."""
    if slices:  # merge and move the entries a few at a time
        monkeypatch.setattr(sparse_counts, "MERGE_ENTRIES", 50)
        monkeypatch.setattr(sparse_counts, "COPY_ENTRIES", 7)
    store = SparseCounts.empty(N_ROWS, 6, "cpu", chunk_rows=chunk_rows)
    table = torch.zeros(N_ROWS, 6)
    for seed in range(4):
        rows, labels = random_batch(seed)
        weights = torch.as_tensor(np.random.RandomState(seed).randint(0, 3, size=50),
                                  dtype=torch.float32)
        add_counts(table, rows, labels, weights)
        store = store.added(rows.reshape(-1), labels.repeat_interleave(8),
                            weights.repeat_interleave(8))
        assert torch.equal(store.to_dense(), table)
        assert store.n_entries == int((table > 0).sum())
    assert torch.equal(SparseCounts.from_dense(table, chunk_rows).to_dense(), table)
    rows, _ = random_batch(9)
    torch.testing.assert_close(store.logits(rows, 0.5), count.decode_counts(table, rows, 0.5))
    rows, labels = random_batch(0)
    removed, overdrawn = store.removed(rows.reshape(-1), labels.repeat_interleave(8),
                                       torch.ones(400))
    assert overdrawn > 0  # weights 0 to 2 were added: some pairs had less than one
    assert bool((removed.arrays()["counts"] > 0).all())


def test_columns_can_be_reordered_and_dropped():
    rows, labels = random_batch(3)
    table = torch.zeros(N_ROWS, 6)
    add_counts(table, rows, labels)
    store = SparseCounts.from_dense(table)
    source = np.array([4, -1, 0, 5, 2])
    index = torch.as_tensor(np.where(source >= 0, source, 0))
    expected = table[:, index] * torch.as_tensor(source >= 0)
    assert torch.equal(store.with_columns(source).to_dense(), expected)


@pytest.mark.parametrize("source", [[0, 1, 2, 3, 4, 5, -1, -1], [-1, 0, 1, -1, 2, 3, 4, 5]])
def test_classes_added_anywhere_keep_every_count(source):
    rows, labels = random_batch(4)
    table = torch.zeros(N_ROWS, 6)
    add_counts(table, rows, labels)
    grown = SparseCounts.from_dense(table).with_columns(np.array(source))
    expected = torch.zeros(N_ROWS, len(source))
    expected[:, [j for j, s in enumerate(source) if s >= 0]] = table
    assert torch.equal(grown.to_dense(), expected)
    more_rows, more_labels = random_batch(5, n_classes=len(source))
    add_counts(expected, more_rows, more_labels)
    grown = grown.added(more_rows.reshape(-1), more_labels.repeat_interleave(8), torch.ones(400))
    assert torch.equal(grown.to_dense(), expected)


def test_the_engine_model_takes_a_store_argument():
    for store in ("dense", "sparse"):
        model = CountValues(8, 16, 5, growing=True, device=torch.device("cpu"), store=store)
        assert model.store == store
        assert model.add_classes(np.arange(-1, 5)).store == store


@pytest.mark.parametrize("slices", [False, True])
def test_adds_that_raise_are_undone_exactly(slices, monkeypatch):
    if slices:  # several merges of one chunk in one add_
        monkeypatch.setattr(sparse_counts, "MERGE_ENTRIES", 50)
        monkeypatch.setattr(sparse_counts, "COPY_ENTRIES", 7)
    store = SparseCounts.empty(N_ROWS, 6, "cpu", chunk_rows=16)
    rows, labels = random_batch(0)
    store.add_(rows.t().reshape(-1), labels.repeat(8), torch.full((400,), 0.3))
    before = SparseCounts(list(store.chunks), 6, 16)
    with pytest.raises(KeyboardInterrupt), store.undone_on_error():
        for seed in (1, 2):
            rows, labels = random_batch(seed)
            store.add_(rows.t().reshape(-1), labels.repeat(8), torch.full((400,), 0.7))
        assert not torch.equal(store.to_dense(), before.to_dense())
        raise KeyboardInterrupt
    assert_same_arrays(store, before)
    assert store._journal is None


def test_learning_replaces_chunks_and_leaves_the_old_ones_as_they_were():
    """add_ builds new chunks: tensors an older store holds never change."""
    store = SparseCounts.empty(N_ROWS, 6, "cpu", chunk_rows=16)
    rows, labels = random_batch(0)
    store.add_(rows.t().reshape(-1), labels.repeat(8), torch.ones(400))
    old = store.to(torch.device("cpu"))  # shares every chunk tensor
    dense = old.to_dense()
    store.add_(rows[:, :1].reshape(-1), labels, torch.ones(50))  # codebook 0 only
    assert store.chunks[0][2] is not old.chunks[0][2]
    assert all(
        new is held
        for chunks in zip(store.chunks[1:], old.chunks[1:])
        for new, held in zip(*chunks)
    )
    assert torch.equal(old.to_dense(), dense)


def test_a_failed_partial_fit_with_new_classes_leaves_the_store_as_it_was(limit, monkeypatch):
    """The grown store shares its chunks with the old one: a failure undoes the adds."""
    first = Y_DIGITS < 5
    clf = fitted(limit, SPARSE, X_DIGITS[first], Y_DIGITS[first], how="stream")
    before = clf.decision_function(X_DIGITS)
    arrays = clf._value_model.sparse.arrays()

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(type(clf._calibration), "add", fail)
        with pytest.raises(KeyboardInterrupt):
            clf.partial_fit(X_DIGITS[~first], Y_DIGITS[~first])
    np.testing.assert_array_equal(clf.classes_, np.arange(5))
    for name, array in clf._value_model.sparse.arrays().items():
        assert torch.equal(array, arrays[name]), name
    np.testing.assert_array_equal(clf.decision_function(X_DIGITS), before)
    clf.partial_fit(X_DIGITS[~first], Y_DIGITS[~first])  # and it goes on as if never failed
    never_failed = fitted(limit, SPARSE, X_DIGITS[first], Y_DIGITS[first], how="stream")
    never_failed.partial_fit(X_DIGITS[~first], Y_DIGITS[~first])
    assert_same_arrays(clf._value_model.sparse, never_failed._value_model.sparse)


def test_a_store_pickled_as_one_array_loads(limit):
    """Stores saved before chunks existed (one indptr, columns, counts) load as one chunk."""
    clf = fitted(limit, SPARSE, X_DIGITS, Y_DIGITS)
    state = clf.__getstate__()
    store = state["_value_model"].sparse
    old = SparseCounts.__new__(SparseCounts)
    vars(old).update(store.arrays(), n_classes=store.n_classes)  # the layout before chunks
    state["_value_model"].sparse = old
    loaded = KeyValueBottleneckClassifier.__new__(KeyValueBottleneckClassifier)
    loaded.__setstate__(pickle.loads(pickle.dumps(state)))  # the digest still matches
    assert len(loaded._value_model.sparse.chunks) == 1
    np.testing.assert_array_equal(loaded.predict_proba(X_DIGITS), clf.predict_proba(X_DIGITS))
    loaded.partial_fit(X_DIGITS[:100], Y_DIGITS[:100])
    clf.partial_fit(X_DIGITS[:100], Y_DIGITS[:100])
    np.testing.assert_array_equal(loaded.class_counts_, clf.class_counts_)
