"""value_update="count": one-pass, order-independent counting values."""

import pickle

import numpy as np
import pytest
import torch
from conftest import class_incremental
from sklearn.datasets import load_iris
from sklearn.frozen import FrozenEstimator

import skkvb.engine.values.count
from skkvb import KeyCodebook, KeyValueBottleneckClassifier
from skkvb.engine.codes import flat_codes
from skkvb.engine.values import add_counts, count_values, decode_counts

X_IRIS, Y_IRIS = load_iris(return_X_y=True)


@pytest.fixture(scope="module")
def iris_codebook():
    codebook = KeyCodebook(n_codebooks=16, n_keys=32, key_dim=3, random_state=0)
    return FrozenEstimator(codebook.fit(X_IRIS))


def counting(codebook, **params):
    return KeyValueBottleneckClassifier(codebook=codebook, value_update="count", **params)


def reference_counts(codes, labels, n_keys, n_classes, weights=None):
    """Slow numpy count table: one sample and one codebook at a time."""
    n_samples, n_codebooks = codes.shape
    weights = np.ones(n_samples) if weights is None else weights
    counts = np.zeros((n_codebooks, n_keys, n_classes))
    for i in range(n_samples):
        for c in range(n_codebooks):
            counts[c, codes[i, c], labels[i]] += weights[i]
    return counts


def fingerprint(clf):
    """Everything a fitted counting classifier has learned, for exact comparisons."""
    return tuple(
        array.tobytes() + str(array.dtype).encode()
        for array in (clf.class_counts_, clf.key_usage_, clf.classes_)
    ) + (clf.t_, clf.n_iter_)


# ------------------------------------------------------------------- engine


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


# --------------------------------------------------------------- estimator


def test_class_counts_equal_a_slow_numpy_reference(iris_codebook):
    clf = counting(iris_codebook).fit(X_IRIS, Y_IRIS)
    codes = clf.codebook_.transform(X_IRIS)
    np.testing.assert_array_equal(clf.class_counts_, reference_counts(codes, Y_IRIS, 32, 3))
    np.testing.assert_array_equal(clf.key_usage_, clf.class_counts_.sum(-1))
    assert clf.n_iter_ == 1 and clf.t_ == 0


def test_predict_proba_is_the_softmax_of_the_mean_fetched_values(iris_codebook):
    clf = counting(iris_codebook, count_smoothing=0.5, mask_unused_keys=False)
    clf.fit(X_IRIS[::2], Y_IRIS[::2])
    counts = clf.class_counts_
    values = np.log((counts + 0.5) / (counts.sum(-1, keepdims=True) + 0.5 * 3))
    np.testing.assert_allclose(clf.values_, values, rtol=1e-6, atol=1e-6)  # float32 logs
    codes = clf.codebook_.transform(X_IRIS)
    logits = values[np.arange(16), codes].mean(1)
    proba = np.exp(logits - logits.max(1, keepdims=True))
    proba /= proba.sum(1, keepdims=True)
    np.testing.assert_allclose(clf.predict_proba(X_IRIS), proba, rtol=1e-5, atol=1e-7)


def test_epochs_are_ignored(iris_codebook):
    one = counting(iris_codebook, max_iter=1).fit(X_IRIS, Y_IRIS)
    many = counting(iris_codebook, max_iter=50, partial_fit_max_iter=7).fit(X_IRIS, Y_IRIS)
    np.testing.assert_array_equal(one.class_counts_, many.class_counts_)
    streamed = counting(iris_codebook, partial_fit_max_iter=7).partial_fit(X_IRIS, Y_IRIS)
    np.testing.assert_array_equal(streamed.class_counts_, one.class_counts_)


@pytest.mark.parametrize("classes_upfront", [True, False], ids=["classes-given", "classes-grow"])
def test_class_incremental_is_bit_identical_to_iid(digits_split, classes_upfront):
    """Integer counts are exact in float32, so the tables and every prediction
    are bit-identical (not merely close)."""
    X_train, X_test, y_train, _ = digits_split
    codebook = KeyCodebook(n_codebooks=32, n_keys=64, key_dim=8, random_state=0)
    codebook = FrozenEstimator(codebook.fit(X_train))
    iid = counting(codebook).fit(X_train, y_train)
    stream = counting(codebook)
    for X_phase, y_phase in class_incremental(X_train, y_train):
        stream.partial_fit(X_phase, y_phase, classes=np.arange(10) if classes_upfront else None)
    np.testing.assert_array_equal(stream.classes_, iid.classes_)
    np.testing.assert_array_equal(stream.class_counts_, iid.class_counts_)
    np.testing.assert_array_equal(stream.key_usage_, iid.key_usage_)
    np.testing.assert_array_equal(stream.predict_proba(X_test), iid.predict_proba(X_test))


def test_partial_fit_over_shuffled_batches_equals_one_call(iris_codebook):
    order = np.random.RandomState(0).permutation(150)
    whole = counting(iris_codebook).partial_fit(X_IRIS, Y_IRIS)
    batches = counting(iris_codebook)
    for batch in np.array_split(order, 7):
        batches.partial_fit(X_IRIS[batch], Y_IRIS[batch])
    np.testing.assert_array_equal(batches.class_counts_, whole.class_counts_)
    np.testing.assert_array_equal(batches.values_, whole.values_)
    np.testing.assert_array_equal(batches.predict_proba(X_IRIS), whole.predict_proba(X_IRIS))


def test_digits_class_incremental_accuracy_is_at_least_sgds(digits_split):
    X_train, X_test, y_train, y_test = digits_split
    codebook = KeyCodebook(n_codebooks=64, n_keys=128, key_dim=8, random_state=0)
    codebook = FrozenEstimator(codebook.fit(X_train))
    sgd = KeyValueBottleneckClassifier(codebook=codebook, partial_fit_max_iter=30, random_state=0)
    count = counting(codebook)
    for X_phase, y_phase in class_incremental(X_train, y_train):
        sgd.partial_fit(X_phase, y_phase)
        count.partial_fit(X_phase, y_phase)
    assert count.score(X_test, y_test) >= sgd.score(X_test, y_test)
    assert count.score(X_test, y_test) >= 0.95


# ------------------------------------------------------- locality and classes


@pytest.mark.parametrize("classes_upfront", [True, False], ids=["classes-given", "classes-grow"])
def test_rows_not_fetched_are_unchanged(iris_codebook, classes_upfront):
    clf = counting(iris_codebook)
    classes = [0, 1, 2] if classes_upfront else None
    clf.partial_fit(X_IRIS[Y_IRIS == 0], Y_IRIS[Y_IRIS == 0], classes=classes)
    counts, values, usage = clf.class_counts_, clf.values_, clf.key_usage_.copy()
    batch = Y_IRIS == 1
    clf.partial_fit(X_IRIS[batch], Y_IRIS[batch])
    fetched = np.zeros(usage.shape, dtype=bool)
    fetched[np.arange(16), clf.codebook_.transform(X_IRIS[batch])] = True
    old = np.searchsorted(clf.classes_, classes or [0])
    np.testing.assert_array_equal(clf.class_counts_[~fetched][:, old], counts[~fetched])
    np.testing.assert_array_equal(clf.key_usage_[~fetched], usage[~fetched])
    if classes_upfront:  # the values themselves, bit for bit
        np.testing.assert_array_equal(clf.values_[~fetched], values[~fetched])
    else:  # a new class enters as a zero column
        np.testing.assert_array_equal(clf.class_counts_[~fetched][:, 1], 0)
        np.testing.assert_array_equal(clf.classes_, [0, 1])
    assert (clf.key_usage_[fetched] > usage[fetched]).all()


def test_masking_snaps_heads_to_the_nearest_used_key():
    codebook = KeyCodebook(n_keys=3, projection="none").fit(np.zeros((3, 1)))
    codebook.keys_ = np.array([[[-10.0], [0.0], [10.0]]], dtype=np.float32)
    codebook = FrozenEstimator(codebook)
    X_train, y_train = np.array([[-10.0], [0.0]]), np.array([0, 1])
    masked = counting(codebook).fit(X_train, y_train)
    unmasked = counting(codebook, mask_unused_keys=False).fit(X_train, y_train)
    np.testing.assert_array_equal(masked.key_usage_, [[1, 1, 0]])
    assert masked.predict([[9.0]])[0] == 1
    np.testing.assert_allclose(unmasked.predict_proba([[9.0]]), [[0.5, 0.5]])


# ---------------------------------------------------------- sample weights


def test_integer_sample_weight_equals_repeating_samples(iris_codebook):
    weights = np.random.RandomState(0).randint(0, 4, size=150)
    weighted = counting(iris_codebook).partial_fit(X_IRIS, Y_IRIS, sample_weight=weights)
    repeated = counting(iris_codebook).partial_fit(
        np.repeat(X_IRIS, weights, axis=0), np.repeat(Y_IRIS, weights)
    )
    np.testing.assert_array_equal(weighted.class_counts_, repeated.class_counts_)
    # key_usage_ counts samples, not weight; the keys it marks used (masking) agree.
    np.testing.assert_array_equal(weighted.key_usage_ > 0, repeated.key_usage_ > 0)
    np.testing.assert_array_equal(weighted.predict_proba(X_IRIS), repeated.predict_proba(X_IRIS))


# ------------------------------------------------------------- persistence


def test_round_trip_predicts_the_same_and_keeps_counting(iris_codebook):
    clf = counting(iris_codebook, count_smoothing=0.3)
    clf.partial_fit(X_IRIS[Y_IRIS < 2], Y_IRIS[Y_IRIS < 2])
    loaded = pickle.loads(pickle.dumps(clf))
    assert loaded.get_params()["value_update"] == "count"
    np.testing.assert_array_equal(loaded.predict_proba(X_IRIS), clf.predict_proba(X_IRIS))
    clf.partial_fit(X_IRIS[Y_IRIS == 2], Y_IRIS[Y_IRIS == 2])
    loaded.partial_fit(X_IRIS[Y_IRIS == 2], Y_IRIS[Y_IRIS == 2])
    assert fingerprint(loaded) == fingerprint(clf)
    np.testing.assert_array_equal(loaded.predict_proba(X_IRIS), clf.predict_proba(X_IRIS))


# ------------------------------------------------------ failures and params


@pytest.mark.parametrize("first_call", [True, False], ids=["first-call", "later-call"])
def test_interrupted_count_leaves_the_classifier_as_it_was(iris_codebook, first_call, monkeypatch):
    """Interrupted after the scatter-add wrote into the table: the rows are put back."""
    clf = counting(iris_codebook)
    if not first_call:
        clf.partial_fit(X_IRIS[::3], Y_IRIS[::3])
        before = fingerprint(clf)

    def add_then_interrupt(*args, **kwargs):
        add_counts(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(skkvb.engine.values.count, "add_counts", add_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        clf.partial_fit(X_IRIS[1::3], Y_IRIS[1::3])
    if first_call:
        assert not hasattr(clf, "classes_")
    else:
        assert fingerprint(clf) == before
    monkeypatch.undo()
    clf.partial_fit(X_IRIS[1::3], Y_IRIS[1::3])
    twin = counting(iris_codebook)
    if not first_call:
        twin.partial_fit(X_IRIS[::3], Y_IRIS[::3])
    twin.partial_fit(X_IRIS[1::3], Y_IRIS[1::3])
    assert fingerprint(clf) == fingerprint(twin)


def test_bad_input_leaves_the_counts_unchanged(iris_codebook):
    clf = counting(iris_codebook)
    clf.partial_fit(X_IRIS[Y_IRIS < 2], Y_IRIS[Y_IRIS < 2], classes=[0, 1])
    state = fingerprint(clf)
    with pytest.raises(ValueError, match=r"labels \[2\] that are not in the classes"):
        clf.partial_fit(X_IRIS, Y_IRIS)
    with pytest.raises(ValueError, match="NaN"):
        clf.partial_fit(np.full((3, 4), np.nan), [0, 1, 0])
    assert fingerprint(clf) == state


def test_switching_value_update_needs_fit(iris_codebook):
    clf = counting(iris_codebook).partial_fit(X_IRIS, Y_IRIS)
    state = fingerprint(clf)
    clf.set_params(value_update="sgd")
    with pytest.raises(ValueError, match="trained with value_update='count'"):
        clf.partial_fit(X_IRIS, Y_IRIS)
    assert fingerprint(clf) == state
    clf.fit(X_IRIS, Y_IRIS)  # starts again with SGD
    assert not hasattr(clf, "class_counts_") and clf.t_ > 0
    clf.set_params(value_update="count").fit(X_IRIS, Y_IRIS)
    assert clf._value_model.name == "count" and clf.class_counts_.sum() == 150 * 16


def test_count_smoothing_is_read_at_prediction(iris_codebook):
    clf = counting(iris_codebook, count_smoothing=1.0).fit(X_IRIS, Y_IRIS)
    other = counting(iris_codebook, count_smoothing=0.1).fit(X_IRIS, Y_IRIS)
    clf.set_params(count_smoothing=0.1)
    np.testing.assert_array_equal(clf.predict_proba(X_IRIS), other.predict_proba(X_IRIS))
