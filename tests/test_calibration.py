"""temperature: calibrated probabilities by default, decisions untouched.

``temperature="auto"`` fits one temperature on held-out logits of a hashed
subsample of the training points: exact leave-one-out with counting values, in
a subsample that does not depend on the order or the split of the stream.
"""

import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import log_softmax
from sklearn.datasets import load_digits
from sklearn.frozen import FrozenEstimator

import skkvb._calibration
from skkvb import KeyCodebook, KeyValueBottleneckClassifier
from skkvb._calibration import CalibrationSample, fit_temperature, point_hashes
from skkvb._compat import InvalidParameterError
from skkvb.metrics import expected_calibration_error

X_DIGITS, Y_DIGITS = load_digits(return_X_y=True)
X, Y = X_DIGITS[:600], Y_DIGITS[:600]
# Keys fitted once, then frozen: they do not depend on the stream.
KEYS = FrozenEstimator(KeyCodebook(n_codebooks=8, n_keys=16, key_dim=4, random_state=0).fit(X))
# Many keys: some are fetched by one point only (what masking changes).
MANY_KEYS = FrozenEstimator(
    KeyCodebook(n_codebooks=8, n_keys=256, key_dim=8, random_state=0).fit(X)
)


def classifier(**params):
    return KeyValueBottleneckClassifier(
        **{"codebook": KEYS, "reseed_unused_keys": False, "random_state": 0, **params}
    )


def stream(clf, order, n_batches, weights=None):
    for batch in np.array_split(order, n_batches):
        w = None if weights is None else weights[batch]
        clf.partial_fit(X[batch], Y[batch], sample_weight=w)
    return clf


def point_position(calibration, i):
    """Where point ``i`` of (X, Y) is in the calibration sample's sorted points."""
    (position,) = np.flatnonzero(calibration.ids == point_hashes(X[i : i + 1], Y[i : i + 1]))
    return position


def held_out(clf, mask_unused_keys):
    return clf._calibration.held_out_logits(
        clf._value_model, clf.classes_, clf.key_usage_, mask_unused_keys,
        clf._prediction_parameters(),
    )


# ------------------------------------------------------ order independence


@pytest.mark.parametrize("cap", [None, 150])  # 150: the threshold is halved on the way
def test_temperature_does_not_depend_on_the_order_or_split_of_the_stream(monkeypatch, cap):
    if cap is not None:
        monkeypatch.setattr(skkvb._calibration, "CALIBRATION_CAP", cap)
    weights = np.random.RandomState(0).randint(0, 3, len(Y)).astype(float)
    rng = np.random.RandomState(1)
    streams = [
        stream(classifier(), rng.permutation(len(Y)), n_batches, weights)
        for n_batches in (1, 3, 7)
    ]
    streams.append(stream(classifier(), np.argsort(Y, kind="stable"), 5, weights))
    fitted = classifier().fit(X, Y, sample_weight=weights)
    reference = streams[0]
    if cap is not None:
        assert reference._calibration.level > 0 and len(reference._calibration) <= cap
    assert reference.temperature_ < 1.0  # sharper than the mean of log-values
    for clf in streams[1:] + [fitted]:
        assert clf.temperature_ == reference.temperature_
        np.testing.assert_array_equal(
            clf.predict_proba(X_DIGITS), reference.predict_proba(X_DIGITS)
        )


def test_the_points_kept_do_not_depend_on_order_split_or_input_type():
    codes = KEYS.transform(X)
    whole = CalibrationSample(8, 16, cap=100).add(X, Y, codes)
    order = np.random.RandomState(0).permutation(len(Y))
    pieces = CalibrationSample(8, 16, cap=100)
    for batch in np.array_split(order, 9):
        # float32 and sparse inputs of the same values are the same points
        rows = sp.csr_matrix(X[batch]) if batch[0] % 2 else X[batch].astype(np.float32)
        pieces = pieces.add(rows, Y[batch].astype(float), codes[batch])
    assert whole.level == pieces.level > 0
    for name in ("ids", "draws", "codes", "labels", "weights", "multiplicity"):
        np.testing.assert_array_equal(getattr(whole, name), getattr(pieces, name))


def test_inputs_scaled_by_a_power_of_two_keep_the_temperature(monkeypatch):
    """Keys fitted on inputs x 2**40 are the keys x 2**40, so the codes are the
    same: the points kept (chosen by their codes) and T are too."""
    monkeypatch.setattr(skkvb._calibration, "CALIBRATION_CAP", 150)
    codebook = KeyCodebook(n_codebooks=8, n_keys=16, key_dim=4, random_state=0)
    plain = KeyValueBottleneckClassifier(codebook=codebook, random_state=0).fit(X, Y)
    scaled = KeyValueBottleneckClassifier(codebook=codebook, random_state=0).fit(X * 2.0**40, Y)
    assert plain._calibration.level == scaled._calibration.level > 0
    assert plain.temperature_ == scaled.temperature_


def test_copies_and_integer_weights_are_the_same_point():
    codes = KEYS.transform(X[:10])
    twice = CalibrationSample(8, 16).add(X[:10], Y[:10], codes).add(X[:10], Y[:10], codes)
    weighted = CalibrationSample(8, 16).add(X[:10], Y[:10], codes, np.full(10, 2.0))
    np.testing.assert_array_equal(twice.weights, weighted.weights)
    np.testing.assert_array_equal(twice.multiplicity, [2] * 10)
    np.testing.assert_array_equal(weighted.multiplicity, [1] * 10)


# ---------------------------------------------------------------- removal


@pytest.mark.parametrize("cap", [None, 150])
def test_removing_points_equals_never_adding_them(cap):
    codes = KEYS.transform(X)
    weights = np.random.RandomState(0).randint(1, 3, len(Y)).astype(float)
    a, b = np.arange(0, 600, 2), np.arange(1, 600, 2)
    both = CalibrationSample(8, 16, cap).add(X, Y, codes, weights)
    removed = both.remove(X[b], Y[b], codes[b], weights[b])
    never = CalibrationSample(8, 16, cap).add(X[a], Y[a], codes[a], weights[a])
    if cap is not None:  # the level never goes down: compare at the same one
        never = CalibrationSample(8, 16, cap)
        never.level = both.level
        never = never.add(X[a], Y[a], codes[a], weights[a])
    assert removed.level == never.level
    for name in ("ids", "draws", "codes", "labels", "weights", "multiplicity"):
        np.testing.assert_array_equal(getattr(removed, name), getattr(never, name))


def test_removing_a_point_never_added_raises():
    codes = KEYS.transform(X[:10])
    sample = CalibrationSample(8, 16).add(X[:5], Y[:5], codes[:5])
    with pytest.raises(ValueError, match="never added"):
        sample.remove(X[5:6], Y[5:6], codes[5:6])
    with pytest.raises(ValueError, match="never added"):  # once too often
        sample.remove(X[:1], Y[:1], codes[:1]).remove(X[:1], Y[:1], codes[:1])
    with pytest.raises(ValueError, match="never added"):  # another label
        sample.remove(X[:1], Y[:1] + 1, codes[:1])
    assert len(sample) == 5  # add and remove leave the sample they start from as it was


# ------------------------------------------------------------ leave-one-out


@pytest.mark.parametrize("i", [0, 17, 345])
def test_leave_one_out_logits_are_those_of_the_model_without_the_point(i):
    """Without masking, exact: the logits of a model trained without the point
    (and its copies), bit for bit."""
    clf = classifier(mask_unused_keys=False).fit(X, Y)
    logits, labels, weights = held_out(clf, mask_unused_keys=False)
    same = np.all(X == X[i], axis=1) & (Y == Y[i])
    without = classifier(mask_unused_keys=False).fit(X[~same], Y[~same])
    position = point_position(clf._calibration, i)
    np.testing.assert_array_equal(
        logits[position], without.decision_function(X[i : i + 1])[0].astype(np.float64)
    )
    assert labels[position] == Y[i] and weights[position] == same.sum()


def test_leave_one_out_under_masking_leaves_out_the_keys_only_the_point_fetched():
    """With masking, each codebook whose key no other point fetched is left out
    of the mean of the model without the point (slow reference)."""
    clf = classifier(codebook=MANY_KEYS).fit(X, Y)
    logits, _, _ = held_out(clf, mask_unused_keys=True)
    codes = MANY_KEYS.transform(X)
    n_alone = 0
    for i in range(0, 600, 37):
        same = np.all(X == X[i], axis=1) & (Y == Y[i])
        without = classifier(codebook=MANY_KEYS).fit(X[~same], Y[~same])
        used = without.key_usage_[np.arange(8), codes[i]] > 0
        n_alone += (~used).sum()
        values = without.values_[np.arange(8), codes[i]][used]
        expected = values.sum(0) / max(used.sum(), 1)
        position = point_position(clf._calibration, i)
        np.testing.assert_allclose(logits[position], expected, rtol=1e-6, atol=1e-6)
    assert n_alone > 0  # the rule was exercised


def test_sgd_points_read_the_trained_values_less_the_keys_only_they_trained():
    clf = classifier(value_update="sgd", max_iter=2).fit(X, Y)
    logits, _, _ = held_out(clf, mask_unused_keys=False)
    codes = KEYS.transform(X)
    values, usage = clf.values_, clf.key_usage_
    for i in (3, 250):
        multiplicity = (np.all(X == X[i], axis=1) & (Y == Y[i])).sum()
        fetched = values[np.arange(8), codes[i]]
        fetched[usage[np.arange(8), codes[i]] <= multiplicity] = 0.0
        position = point_position(clf._calibration, i)
        np.testing.assert_allclose(logits[position], fetched.mean(0), rtol=1e-6, atol=1e-7)


def test_temperature_minimises_the_held_out_log_loss():
    clf = classifier().fit(X, Y)
    logits, labels, weights = held_out(clf, mask_unused_keys=True)

    def loss(t):
        return -np.average(log_softmax(logits / t, axis=1)[np.arange(len(labels)), labels],
                           weights=weights)

    t = clf.temperature_
    assert loss(t) <= min(loss(t * 0.99), loss(t * 1.01))


def test_fit_temperature_falls_back_to_one_when_the_logits_cannot_tell():
    assert fit_temperature(np.zeros((0, 3)), np.zeros(0, int)) == 1.0
    assert fit_temperature(np.ones((4, 3)), np.zeros(4, int)) == 1.0
    # All right with a margin: the search stops where the logits span 50 nats.
    separable = np.array([[2.0, 0.0], [0.0, 1.0]])
    assert fit_temperature(separable, np.array([0, 1])) == pytest.approx(2.0 / 50.0, rel=1e-5)


# -------------------------------------------------- what the parameter does


def test_a_float_temperature_is_used_exactly():
    clf = classifier(temperature=0.37).fit(X, Y)
    assert clf.temperature_ == 0.37
    logits = clf.decision_function(X_DIGITS).astype(np.float64) / 0.37
    logits -= logits.max(1, keepdims=True)
    expected = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    np.testing.assert_array_equal(clf.predict_log_proba(X_DIGITS), expected)
    np.testing.assert_array_equal(clf.predict_proba(X_DIGITS), np.exp(expected))


@pytest.mark.parametrize("rule", ["count", "sgd"])
def test_decisions_do_not_depend_on_the_temperature(rule):
    auto = classifier(value_update=rule, max_iter=3).fit(X, Y)
    one = classifier(value_update=rule, max_iter=3, temperature=1.0).fit(X, Y)
    assert auto.temperature_ != 1.0
    np.testing.assert_array_equal(auto.decision_function(X_DIGITS), one.decision_function(X_DIGITS))
    np.testing.assert_array_equal(auto.predict(X_DIGITS), one.predict(X_DIGITS))
    np.testing.assert_array_equal(auto.predict_proba(X_DIGITS).argmax(1),
                                  one.predict_proba(X_DIGITS).argmax(1))


def test_the_temperature_follows_the_counts_and_the_parameters_read_at_prediction():
    clf = classifier(codebook=MANY_KEYS).partial_fit(X[:300], Y[:300])
    first = clf.temperature_
    assert clf.temperature_ == first  # cached
    clf.partial_fit(X[300:], Y[300:])
    assert clf.temperature_ == classifier(codebook=MANY_KEYS).fit(X, Y).temperature_ != first
    after_counts = clf.temperature_
    clf.set_params(count_smoothing=1.0)
    refit = classifier(codebook=MANY_KEYS, count_smoothing=1.0).fit(X, Y)
    assert clf.temperature_ == refit.temperature_ != after_counts
    clf.set_params(count_smoothing=0.1, mask_unused_keys=False)
    assert clf.temperature_ != after_counts
    clf.set_params(temperature=2.0)
    assert clf.temperature_ == 2.0


def test_growing_label_sets_keep_the_temperature_order_independent():
    by_class = np.argsort(Y, kind="stable")
    grown = stream(classifier(), by_class, 5)
    shuffled = stream(classifier(), np.random.RandomState(0).permutation(len(Y)), 2)
    assert grown.temperature_ == shuffled.temperature_


def test_an_invalid_temperature_set_after_fit_raises_at_prediction():
    clf = classifier().fit(X, Y)
    clf.set_params(temperature=-1.0)
    with pytest.raises(InvalidParameterError, match="temperature"):
        clf.predict_proba(X)
    np.testing.assert_array_equal(clf.predict(X), clf.set_params(temperature=1.0).predict(X))


# ------------------------------------------------------------ persistence


@pytest.mark.parametrize("rule", ["count", "sgd"])
def test_pickles_keep_the_temperature(rule):
    clf = classifier(value_update=rule, max_iter=2).fit(X, Y)
    expected = clf.predict_proba(X_DIGITS)  # fits and caches T
    loaded = pickle.loads(pickle.dumps(clf))
    assert loaded.temperature_ == clf.temperature_
    np.testing.assert_array_equal(loaded.predict_proba(X_DIGITS), expected)
    loaded.partial_fit(X_DIGITS[600:700], Y_DIGITS[600:700])
    assert loaded.temperature_ != clf.temperature_


def test_a_pickle_from_before_the_temperature_predicts_at_temperature_one():
    clf = classifier().fit(X, Y)
    del clf._calibration  # as state pickled before calibration samples existed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = pickle.loads(pickle.dumps(clf))
        assert loaded.temperature_ == 1.0
        np.testing.assert_array_equal(
            loaded.predict_proba(X), classifier(temperature=1.0).fit(X, Y).predict_proba(X)
        )


# ------------------------------------------------------------------ metric


def slow_ece(y_true, y_proba, labels, n_bins):
    """ECE one bin at a time: bins (lo, hi], the first one closed."""
    confidence = y_proba.max(1)
    correct = labels[y_proba.argmax(1)] == y_true
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = (confidence > lo) & (confidence <= hi) | ((b == 0) & (confidence == 0))
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return total


@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_expected_calibration_error_matches_a_slow_reference(n_bins):
    rng = np.random.RandomState(0)
    y_proba = rng.dirichlet(np.full(4, 0.5), size=500)
    labels = np.array(["a", "b", "c", "d"])
    y_true = labels[rng.randint(0, 4, 500)]
    expected = slow_ece(y_true, y_proba, labels, n_bins)
    assert expected_calibration_error(y_true, y_proba, n_bins=n_bins) == pytest.approx(expected)


def test_expected_calibration_error_edges_and_errors():
    always_sure = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert expected_calibration_error([0, 0, 1, 1], always_sure) == 0.25  # the error rate
    # labels name the columns; a class missing from y_true needs them
    proba = np.array([[0.2, 0.8, 0.0], [0.1, 0.0, 0.9]])
    assert expected_calibration_error([1, 2], proba, labels=[0, 1, 2]) == pytest.approx(0.15)
    with pytest.raises(ValueError, match="labels="):
        expected_calibration_error([1, 2], proba)
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error([0, 1], always_sure[:2], n_bins=0)
    with pytest.raises(ValueError, match="shape"):
        expected_calibration_error([0, 1, 1], always_sure[:2])
