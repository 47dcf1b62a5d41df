"""KeyValueBottleneckRegressor: per-key target statistics, exact where promised."""

import numpy as np
import pytest
import scipy.sparse as sp
from _helpers import X_IRIS, fingerprint, round_trip, small_codebook
from sklearn.frozen import FrozenEstimator
from sklearn.utils._param_validation import InvalidParameterError

from skkvb import KeyCodebook, KeyValueBottleneckRegressor

RNG = np.random.RandomState(0)
# Integer targets: every sum of w, w*y and w*y**2 is exact in float64 (the exact guarantee).
Y_INT = np.c_[RNG.randint(-50, 50, len(X_IRIS)), RNG.randint(0, 1000, len(X_IRIS))]
# Real targets: equal up to float64 rounding only.
Y_REAL = np.c_[np.sin(X_IRIS @ RNG.normal(size=4)), X_IRIS[:, 3] + 0.1 * RNG.normal(size=150)]


def regressor(codebook, **params):
    return KeyValueBottleneckRegressor(codebook=codebook, random_state=0, **params)


def state_of(reg):
    return reg.predict(X_IRIS), reg.values_, reg.key_variances_, reg.key_weights_


def assert_same_state(a, b):
    for left, right in zip(state_of(a), state_of(b)):
        np.testing.assert_array_equal(left, right)


# ------------------------------------------------------------ order independence


@pytest.mark.parametrize("pooling", ["precision", "uniform"])
def test_partial_fit_in_any_order_and_split_equals_fit(iris_codebook, pooling):
    one_call = regressor(iris_codebook, pooling=pooling).fit(X_IRIS, Y_INT)
    for seed in range(3):
        order = np.random.RandomState(seed).permutation(len(X_IRIS))
        stream = regressor(iris_codebook, pooling=pooling)
        for batch in np.array_split(order, seed + 2):
            stream.partial_fit(X_IRIS[batch], Y_INT[batch])
        assert_same_state(stream, one_call)


def test_a_stream_sorted_by_target_equals_fit_up_to_rounding(iris_codebook):
    one_call = regressor(iris_codebook).fit(X_IRIS, Y_REAL)
    stream = regressor(iris_codebook)
    for phase in np.array_split(np.argsort(Y_REAL[:, 0]), 5):
        stream.partial_fit(X_IRIS[phase], Y_REAL[phase])
    np.testing.assert_array_equal(stream.key_weights_, one_call.key_weights_)
    np.testing.assert_allclose(stream.values_, one_call.values_, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stream.predict(X_IRIS), one_call.predict(X_IRIS), rtol=1e-10)


def test_fit_does_not_depend_on_the_order_of_the_rows():
    """Keys fitted here are fitted on the distinct rows, sorted: row order is moot."""
    order = np.random.RandomState(1).permutation(len(X_IRIS))
    fitted = regressor(small_codebook()).fit(X_IRIS, Y_INT)
    shuffled = regressor(small_codebook()).fit(X_IRIS[order], Y_INT[order])
    np.testing.assert_array_equal(shuffled.codebook_.keys_, fitted.codebook_.keys_)
    assert_same_state(shuffled, fitted)


# ------------------------------------------------------------ sample weights


@pytest.mark.parametrize("given_keys", [True, False])
def test_weight_two_is_a_duplicate_and_zero_is_a_drop(iris_codebook, given_keys):
    weights = np.random.RandomState(2).randint(0, 3, len(X_IRIS))
    repeated = np.repeat(np.arange(len(X_IRIS)), weights)
    codebook = iris_codebook if given_keys else small_codebook()
    weighted = regressor(codebook).fit(X_IRIS, Y_INT, sample_weight=weights)
    duplicated = regressor(codebook).fit(X_IRIS[repeated], Y_INT[repeated])
    assert_same_state(weighted, duplicated)
    stream = regressor(codebook)
    for batch in np.array_split(np.arange(len(X_IRIS)), 4):
        stream.partial_fit(X_IRIS[batch], Y_INT[batch], sample_weight=weights[batch])
    if given_keys:  # keys fitted on the first batch alone differ, as documented
        assert_same_state(stream, duplicated)


def test_a_batch_of_zero_weight_changes_no_statistic(iris_codebook):
    reg = regressor(iris_codebook).partial_fit(X_IRIS[:50], Y_INT[:50])
    before = state_of(reg)
    reg.partial_fit(X_IRIS[50:], Y_INT[50:], sample_weight=np.zeros(100))
    for left, right in zip(state_of(reg), before):
        np.testing.assert_array_equal(left, right)


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_all_weights_zero_raise_where_there_is_nothing_to_fit(method):
    with pytest.raises(ValueError, match="sample_weight is zero for every sample"):
        getattr(regressor(small_codebook()), method)(X_IRIS, Y_INT, sample_weight=np.zeros(150))


# ------------------------------------------------------------ bad targets


BAD_TARGETS = {
    "nan": (np.where(np.arange(150) == 7, np.nan, 1.0), "y contains NaN"),
    "inf": (np.where(np.arange(150) == 7, np.inf, 1.0), "y contains infinity"),
    "too large": (np.full(150, 1e200), "y contains values beyond"),
    "wrong length": (np.ones(149), "y has 149 samples, but X has 150"),
    "three dimensions": (np.ones((150, 2, 2)), r"y must be of shape .* got shape \(150, 2, 2\)"),
    "no outputs": (np.ones((150, 0)), "y has no outputs"),
}


@pytest.mark.parametrize("case", BAD_TARGETS)
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_bad_targets_raise_naming_y_and_leave_the_model_untouched(iris_codebook, case, method):
    y, message = BAD_TARGETS[case]
    reg = regressor(iris_codebook).fit(X_IRIS, Y_REAL[:, 0])
    predictions, before = reg.predict(X_IRIS), fingerprint(reg)
    with pytest.raises(ValueError, match=message):
        getattr(reg, method)(X_IRIS, y)
    assert fingerprint(reg) == before
    np.testing.assert_array_equal(reg.predict(X_IRIS), predictions)


def test_partial_fit_with_another_number_of_outputs_raises(iris_codebook):
    reg = regressor(iris_codebook).partial_fit(X_IRIS, Y_INT)
    before = fingerprint(reg)
    with pytest.raises(ValueError, match="y has 1 outputs, but this regressor was trained on 2"):
        reg.partial_fit(X_IRIS, Y_INT[:, 0])
    assert fingerprint(reg) == before


def test_parameters_read_at_prediction_are_checked_there(iris_codebook):
    reg = regressor(iris_codebook).fit(X_IRIS, Y_REAL)
    reg.set_params(smoothing=-1.0)
    with pytest.raises(InvalidParameterError, match="smoothing"):
        reg.predict(X_IRIS)


# ------------------------------------------------------------ outputs


def test_output_shapes_follow_y(iris_codebook):
    one_d = regressor(iris_codebook).fit(X_IRIS, Y_REAL[:, 0])
    column = regressor(iris_codebook).fit(X_IRIS, Y_REAL[:, :1])
    both = regressor(iris_codebook).fit(X_IRIS, Y_REAL)
    assert one_d.predict(X_IRIS).shape == (150,)
    assert column.predict(X_IRIS).shape == (150, 1)
    assert both.predict(X_IRIS).shape == (150, 2)
    assert both.predict(X_IRIS).dtype == np.float64
    assert both.values_.shape == both.key_variances_.shape == (16, 32, 2)
    assert both.n_outputs_ == 2 and one_d.n_outputs_ == 1
    np.testing.assert_array_equal(one_d.predict(X_IRIS), column.predict(X_IRIS)[:, 0])


def test_outputs_are_learned_independently(iris_codebook):
    both = regressor(iris_codebook).fit(X_IRIS, Y_INT).predict(X_IRIS)
    for j in range(2):
        alone = regressor(iris_codebook).fit(X_IRIS, Y_INT[:, j]).predict(X_IRIS)
        np.testing.assert_array_equal(both[:, j], alone)


def test_sparse_input_gives_the_dense_predictions(iris_codebook):
    dense = regressor(small_codebook()).fit(X_IRIS, Y_INT)
    sparse = regressor(small_codebook()).fit(sp.csr_matrix(X_IRIS), Y_INT)
    assert_same_state(sparse, dense)
    np.testing.assert_array_equal(sparse.predict(sp.csr_matrix(X_IRIS)), dense.predict(X_IRIS))


# ------------------------------------------------------------ reference


def slow_reference(codes, y, weights, codes_test, smoothing, pooling, n_keys):
    """Per-key means and variances by a plain loop, then pooled per sample."""
    n_codebooks = codes.shape[1]
    n, s, q = (np.zeros((n_codebooks, n_keys, y.shape[1])) for _ in range(3))
    for codes_i, y_i, w_i in zip(codes, y, weights):
        for c, k in enumerate(codes_i):
            n[c, k] += w_i
            s[c, k] += w_i * y_i
            q[c, k] += w_i * y_i**2
    mean = np.average(y, axis=0, weights=weights)
    variance = np.average((y - mean) ** 2, axis=0, weights=weights)
    predictions = []
    for codes_i in codes_test:
        key_means, key_variances = [], []
        for c, k in enumerate(codes_i):
            key_mean = s[c, k] / n[c, k] if n[c, k, 0] > 0 else mean
            spread = q[c, k] - 2 * key_mean * s[c, k] + key_mean**2 * n[c, k]
            key_means.append(key_mean)
            key_variances.append((spread + smoothing * variance) / (n[c, k] + smoothing))
        key_means, precision = np.array(key_means), 1 / np.array(key_variances)
        if pooling == "uniform":
            precision = np.ones_like(precision)
        predictions.append((precision * key_means).sum(0) / precision.sum(0))
    return np.array(predictions)


@pytest.mark.parametrize("pooling", ["precision", "uniform"])
@pytest.mark.parametrize("smoothing", [0.3, 1.0])
def test_predictions_equal_a_slow_numpy_reference(iris_codebook, pooling, smoothing):
    weights = np.random.RandomState(3).uniform(0, 2, len(X_IRIS))
    train, test = np.arange(0, 150, 2), np.arange(1, 150, 2)
    reg = regressor(iris_codebook, pooling=pooling, smoothing=smoothing, mask_unused_keys=False)
    reg.fit(X_IRIS[train], Y_REAL[train], sample_weight=weights[train])
    codes = iris_codebook.transform(X_IRIS)
    expected = slow_reference(
        codes[train], Y_REAL[train], weights[train].astype(np.float32), codes[test],
        smoothing, pooling, n_keys=32,
    )
    np.testing.assert_allclose(reg.predict(X_IRIS[test]), expected, rtol=1e-9)


def test_masking_snaps_heads_to_the_nearest_used_key():
    """One codebook of three keys on the raw 1-D input; only two are trained."""
    codebook = KeyCodebook(n_keys=3, projection="none").fit(np.zeros((3, 1)))
    codebook.keys_ = np.array([[[-10.0], [0.0], [10.0]]], dtype=np.float32)
    codebook = FrozenEstimator(codebook)
    X_train, y_train = np.array([[-10.0], [0.0]]), np.array([4.0, 8.0])
    masked = regressor(codebook).fit(X_train, y_train)
    unmasked = regressor(codebook, mask_unused_keys=False).fit(X_train, y_train)
    np.testing.assert_array_equal(masked.key_usage_, [[1, 1, 0]])
    # 9.0 fetches the untrained key at 10 unless it is masked; then the key at 0.0.
    assert masked.predict([[9.0]])[0] == 8.0
    assert unmasked.predict([[9.0]])[0] == 6.0  # the mean of all targets


# ------------------------------------------------------------ persistence


@pytest.mark.parametrize("how", ["pickle", "joblib"])
def test_round_trip_predicts_and_streams_on_identically(iris_codebook, how):
    reg = regressor(iris_codebook).partial_fit(X_IRIS[:75], Y_INT[:75])
    loaded = round_trip(reg, how)
    assert_same_state(loaded, reg)
    reg.partial_fit(X_IRIS[75:], Y_INT[75:])
    loaded.partial_fit(X_IRIS[75:], Y_INT[75:])
    assert_same_state(loaded, reg)
