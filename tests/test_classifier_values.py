"""How KeyValueBottleneckClassifier learns its values, through the estimator:
counting (value_update="count") and SGD (value_update="sgd") against slow
references, order independence, locality (a partial_fit touches only the rows
its samples fetched), masking of unused keys, sample weights, verbosity and
determinism under random_state.

The engine's value rules alone are tested in test_engine.py; label sets and
class-incremental streams in test_label_growth.py.
"""

import json
import os
import pathlib
import subprocess
import sys

import joblib
import numpy as np
import pytest
from _helpers import X_IRIS, Y_IRIS, fetched_rows, fingerprint, reference_counts, small_codebook
from _strategies import PROPERTY, data_arrays, draw_list, fitted_codebooks
from hypothesis import event, given
from hypothesis import strategies as st
from sklearn.datasets import load_digits
from sklearn.frozen import FrozenEstimator

from skkvb import KeyCodebook, KeyValueBottleneckClassifier

TESTS = pathlib.Path(__file__).parent


def counting(codebook, **params):
    return KeyValueBottleneckClassifier(codebook=codebook, value_update="count", **params)


# ------------------------------------------------------------ counting


def test_class_counts_equal_a_slow_numpy_reference(iris_codebook):
    clf = counting(iris_codebook).fit(X_IRIS, Y_IRIS)
    codes = clf.codebook_.transform(X_IRIS)
    np.testing.assert_array_equal(clf.class_counts_, reference_counts(codes, Y_IRIS, 32, 3))
    np.testing.assert_array_equal(clf.key_usage_, clf.class_counts_.sum(-1))
    assert clf.n_iter_ == 1 and clf.t_ == 0


def test_predict_proba_is_the_softmax_of_the_mean_fetched_values(iris_codebook):
    # temperature=1.0: the probabilities of the values themselves (test_calibration.py
    # covers the fitted temperature)
    clf = counting(iris_codebook, count_smoothing=0.5, mask_unused_keys=False, temperature=1.0)
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


def test_partial_fit_over_shuffled_batches_equals_one_call(iris_codebook):
    order = np.random.RandomState(0).permutation(150)
    whole = counting(iris_codebook).partial_fit(X_IRIS, Y_IRIS)
    batches = counting(iris_codebook)
    for batch in np.array_split(order, 7):
        batches.partial_fit(X_IRIS[batch], Y_IRIS[batch])
    np.testing.assert_array_equal(batches.class_counts_, whole.class_counts_)
    np.testing.assert_array_equal(batches.values_, whole.values_)
    np.testing.assert_array_equal(batches.predict_proba(X_IRIS), whole.predict_proba(X_IRIS))


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


@PROPERTY
@given(data=st.data())
def test_counting_is_local_and_independent_of_order_split_and_repetition(data):
    """value_update="count": rows no positive-weight sample fetched keep their
    counts; any split and order of the batches, and integer weights instead of
    repeated samples, give bit-identical counts and predictions."""
    n_features = data.draw(st.integers(1, 6), label="n_features")
    X = data.draw(data_arrays(st.integers(2, 60), n_features), label="X")
    codebook = FrozenEstimator(data.draw(fitted_codebooks(n_features, X), label="codebook"))
    y = draw_list(data, st.integers(0, 4), len(X), "y")
    weights = draw_list(data, st.integers(0, 3), len(X), "weights")
    cut = data.draw(st.integers(1, len(X) - 1), label="cut")
    order = np.asarray(data.draw(st.permutations(range(len(X))), label="order"))

    first = counting(codebook).partial_fit(X[:cut], y[:cut], sample_weight=weights[:cut])
    counts = dict(zip(first.classes_, np.moveaxis(first.class_counts_, -1, 0)))
    first.partial_fit(X[cut:], y[cut:], sample_weight=weights[cut:])
    untouched = ~fetched_rows(codebook, X[cut:], weights[cut:])
    for label, column in counts.items():
        after = first.class_counts_[..., np.searchsorted(first.classes_, label)]
        np.testing.assert_array_equal(after[untouched], column[untouched])

    repeated = counting(codebook)
    batches = np.array_split(np.repeat(order, weights[order]), data.draw(st.integers(1, 4)))
    batches = [batch for batch in batches if batch.size]
    if not batches:  # all weights zero: nothing to repeat
        return
    for batch in batches:
        repeated.partial_fit(X[batch], y[batch])
    seen = np.unique(y[weights > 0])
    known = np.searchsorted(first.classes_, seen)
    np.testing.assert_array_equal(repeated.class_counts_, first.class_counts_[..., known])
    if len(seen) == len(first.classes_):
        np.testing.assert_array_equal(repeated.predict_proba(X), first.predict_proba(X))


def test_count_smoothing_is_read_at_prediction(iris_codebook):
    clf = counting(iris_codebook, count_smoothing=1.0).fit(X_IRIS, Y_IRIS)
    other = counting(iris_codebook, count_smoothing=0.1).fit(X_IRIS, Y_IRIS)
    clf.set_params(count_smoothing=0.1)
    np.testing.assert_array_equal(clf.predict_proba(X_IRIS), other.predict_proba(X_IRIS))


def test_switching_value_update_needs_fit(iris_codebook):
    clf = counting(iris_codebook).partial_fit(X_IRIS, Y_IRIS)
    state = fingerprint(clf)
    clf.set_params(value_update="sgd")
    with pytest.raises(ValueError, match="trained with value_update='count'"):
        clf.partial_fit(X_IRIS, Y_IRIS)
    clf.set_params(value_update="count")
    assert fingerprint(clf) == state
    clf.set_params(value_update="sgd").fit(X_IRIS, Y_IRIS)  # starts again with SGD
    assert not hasattr(clf, "class_counts_") and clf.t_ > 0
    clf.set_params(value_update="count").fit(X_IRIS, Y_IRIS)
    assert clf._value_model.name == "count" and clf.class_counts_.sum() == 150 * 16


# ----------------------------------------------------------------- SGD


def test_sample_weight_scales_the_step_and_zero_weight_is_a_no_op(iris_codebook):
    base = dict(codebook=iris_codebook, batch_size=256, random_state=0, value_update="sgd")
    doubled = KeyValueBottleneckClassifier(learning_rate=2.0, **base).partial_fit(X_IRIS, Y_IRIS)
    weighted = KeyValueBottleneckClassifier(learning_rate=1.0, **base)
    weighted.partial_fit(X_IRIS, Y_IRIS, sample_weight=np.full(150, 2.0))
    np.testing.assert_allclose(weighted.values_, doubled.values_, rtol=1e-5, atol=1e-7)

    # Rows fetched only by zero-weight samples do not move, nor count as used.
    fresh = KeyValueBottleneckClassifier(learning_rate=1.0, **base)
    fresh.partial_fit(X_IRIS[Y_IRIS == 0], Y_IRIS[Y_IRIS == 0], classes=[0, 1, 2])
    before, usage = fresh.values_, fresh.key_usage_.copy()
    weights = np.where(Y_IRIS == 1, 0.0, 1.0)
    fresh.partial_fit(X_IRIS[Y_IRIS > 0], Y_IRIS[Y_IRIS > 0], sample_weight=weights[Y_IRIS > 0])
    only_zero_weight = fetched_rows(fresh.codebook_, X_IRIS[Y_IRIS == 1])
    only_zero_weight &= ~fetched_rows(fresh.codebook_, X_IRIS[Y_IRIS != 1])
    assert only_zero_weight.any()
    np.testing.assert_array_equal(fresh.values_[only_zero_weight], before[only_zero_weight])
    np.testing.assert_array_equal(fresh.key_usage_[only_zero_weight], usage[only_zero_weight])


def test_verbose_reports_each_epoch(capsys):
    KeyValueBottleneckClassifier(
        codebook=small_codebook(), value_update="sgd", max_iter=3, verbose=1
    ).fit(X_IRIS, Y_IRIS)
    out = capsys.readouterr().out
    assert out.count("-- Epoch") == 3 and "loss" in out


@PROPERTY
@given(data=st.data())
def test_rows_not_fetched_never_change(data):
    """SGD, with sample weights and new classes: the property behind the
    deterministic locality test below."""
    n_features = data.draw(st.integers(1, 6), label="n_features")
    X_first = data.draw(data_arrays(st.integers(1, 40), n_features), label="X_first")
    X_next = data.draw(data_arrays(st.integers(1, 40), n_features), label="X_next")
    codebook = FrozenEstimator(data.draw(fitted_codebooks(n_features, X_first), label="codebook"))
    labels = st.integers(0, 4)
    y_first = draw_list(data, labels, len(X_first), "y_first")
    y_next = draw_list(data, labels, len(X_next), "y_next")
    weights = draw_list(data, st.sampled_from([0.0, 0.5, 1.0, 3.0]), len(X_next), "weights")
    clf = KeyValueBottleneckClassifier(
        codebook=codebook,
        value_update="sgd",
        batch_size=data.draw(st.integers(1, 32), label="batch_size"),
        partial_fit_max_iter=data.draw(st.integers(1, 3), label="epochs"),
        random_state=0,
    ).partial_fit(X_first, y_first)
    values, usage, classes = clf.values_, clf.key_usage_.copy(), clf.classes_.copy()
    unseen = clf._value_model.table[:, -1].numpy().reshape(usage.shape).copy()

    clf.partial_fit(X_next, y_next, sample_weight=weights)

    untouched = ~fetched_rows(codebook, X_next, weights)
    event(f"untouched rows: {'some' if untouched.any() else 'none'}")
    old = np.searchsorted(clf.classes_, classes)
    np.testing.assert_array_equal(clf.values_[untouched][:, old], values[untouched])
    np.testing.assert_array_equal(clf.key_usage_[untouched], usage[untouched])
    # New classes start, on every row, as the "not yet seen" column stood.
    new = np.flatnonzero(~np.isin(clf.classes_, classes))
    for column in new:
        np.testing.assert_array_equal(clf.values_[untouched][:, column], unseen[untouched])


# ------------------------------------------------------------ both rules


def learned(clf):
    """What a rule learns per key: class counts when counting, values with SGD."""
    return clf.class_counts_ if clf.value_update == "count" else clf.values_


@pytest.mark.parametrize("value_update", ["count", "sgd"])
@pytest.mark.parametrize("classes_upfront", [True, False], ids=["classes-given", "classes-grow"])
def test_partial_fit_touches_only_the_rows_its_samples_fetched(
    iris_codebook, value_update, classes_upfront
):
    clf = KeyValueBottleneckClassifier(
        codebook=iris_codebook, value_update=value_update, random_state=0
    )
    classes = [0, 1, 2] if classes_upfront else None
    clf.partial_fit(X_IRIS[Y_IRIS == 0], Y_IRIS[Y_IRIS == 0], classes=classes)
    before, values, usage = learned(clf), clf.values_, clf.key_usage_.copy()
    batch = Y_IRIS == 1
    clf.partial_fit(X_IRIS[batch], Y_IRIS[batch])
    fetched = fetched_rows(clf.codebook_, X_IRIS[batch])
    old = np.searchsorted(clf.classes_, classes or [0])
    assert (clf.values_[..., old] != values).any(), "the batch trained nothing"
    np.testing.assert_array_equal(learned(clf)[~fetched][:, old], before[~fetched])
    np.testing.assert_array_equal(clf.key_usage_[~fetched], usage[~fetched])
    assert (clf.key_usage_[fetched] > usage[fetched]).all()
    if classes_upfront:  # the values themselves, bit for bit
        np.testing.assert_array_equal(clf.values_[~fetched], values[~fetched])
    else:
        np.testing.assert_array_equal(clf.classes_, [0, 1])
    if value_update == "count" and not classes_upfront:  # a new class enters as a zero column
        np.testing.assert_array_equal(clf.class_counts_[~fetched][:, 1], 0)


@pytest.mark.parametrize("value_update", ["count", "sgd"])
def test_masking_snaps_heads_to_the_nearest_used_key(value_update):
    """One codebook of three keys on the raw 1-D input; only two are trained."""
    codebook = KeyCodebook(n_keys=3, projection="none").fit(np.zeros((3, 1)))
    codebook.keys_ = np.array([[[-10.0], [0.0], [10.0]]], dtype=np.float32)
    codebook = FrozenEstimator(codebook)
    X_train, y_train = np.array([[-10.0], [0.0]]), np.array([0, 1])
    params = dict(codebook=codebook, value_update=value_update, random_state=0)
    masked = KeyValueBottleneckClassifier(**params).fit(X_train, y_train)
    unmasked = KeyValueBottleneckClassifier(mask_unused_keys=False, **params).fit(X_train, y_train)
    np.testing.assert_array_equal(masked.key_usage_, [[1, 1, 0]])
    # 9.0 fetches the untrained key at 10 unless it is masked; then key 0.0 (class 1).
    assert masked.predict([[9.0]])[0] == 1
    np.testing.assert_allclose(unmasked.predict_proba([[9.0]]), [[0.5, 0.5]])


def model_digest(seed):
    """Digests of keys, codes, values and predictions of a fit and a
    class-incremental stream, with each value rule."""
    X, y = load_digits(return_X_y=True)
    X, y = X[:600], y[:600]

    def codebook():
        return KeyCodebook(n_codebooks=16, n_keys=64, key_dim=4, max_iter=2)

    digest = {}
    for rule in ("count", "sgd"):
        clf = KeyValueBottleneckClassifier(
            codebook=codebook(), value_update=rule, max_iter=5, random_state=seed
        )
        clf.fit(X, y)
        stream = KeyValueBottleneckClassifier(
            codebook=codebook(), value_update=rule, partial_fit_max_iter=3, random_state=seed
        )
        for phase in ([0, 1, 2], [3, 4, 5], [6, 7, 8, 9]):
            stream.partial_fit(X[np.isin(y, phase)], y[np.isin(y, phase)])
        digest.update({
            f"{rule} keys": joblib.hash(clf.codebook_.keys_),
            f"{rule} codes": joblib.hash(clf.codebook_.transform(X)),
            f"{rule} values": joblib.hash(clf.values_),
            f"{rule} proba": joblib.hash(clf.predict_proba(X)),
            f"{rule} stream keys": joblib.hash(stream.codebook_.keys_),
            f"{rule} stream proba": joblib.hash(stream.predict_proba(X)),
        })
    return digest


def test_same_seed_is_bit_identical_across_processes_and_other_seeds_differ():
    here = model_digest(0)
    assert model_digest(0) == here
    script = (
        "import json, torch; torch.set_num_threads(1)\n"
        "from test_classifier_values import model_digest\n"
        "print(json.dumps(model_digest(0)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=TESTS, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == here
    other = model_digest(1)
    assert all(other[key] != here[key] for key in here), other
