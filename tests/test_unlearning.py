"""KeyValueBottleneckClassifier.unlearn: taking samples out of a counting model.

With keys that do not depend on the data (a fitted codebook in FrozenEstimator),
fit(A + B) then unlearn(B) must equal fit(A) bit for bit; bad requests must
raise and leave the classifier exactly as it was.
"""

import numpy as np
import pytest
import torch
from _helpers import fingerprint, round_trip
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator

from skkvb import KeyCodebook, KeyValueBottleneckClassifier
from skkvb.engine.values import add_counts, remove_counts

X_DIGITS, Y_DIGITS = load_digits(return_X_y=True)
# Keys fitted once on all inputs, then frozen: they do not depend on A or B.
KEYS = FrozenEstimator(
    KeyCodebook(n_codebooks=8, n_keys=16, key_dim=4, random_state=0).fit(X_DIGITS)
)


def counting(**params):
    return KeyValueBottleneckClassifier(**{"codebook": KEYS, "random_state": 0, **params})


def split(seed=0, fraction=0.3, mask=None):
    """Indices of A and B: B a random ``fraction`` of the samples (within ``mask``)."""
    rng = np.random.RandomState(seed)
    in_b = rng.rand(len(Y_DIGITS)) < fraction
    if mask is not None:
        in_b &= mask
    return np.flatnonzero(~in_b), np.flatnonzero(in_b)


def stream(clf, index, weights=None, n_batches=4, seed=0, **params):
    """partial_fit over ``index`` in a shuffled order, in ``n_batches`` calls."""
    order = np.random.RandomState(seed).permutation(index)
    for batch in np.array_split(order, n_batches):
        w = None if weights is None else weights[batch]
        clf.partial_fit(X_DIGITS[batch], Y_DIGITS[batch], sample_weight=w, **params)
    return clf


def assert_same_model(unlearned, never):
    np.testing.assert_array_equal(unlearned.classes_, never.classes_)
    np.testing.assert_array_equal(unlearned.class_counts_, never.class_counts_)
    np.testing.assert_array_equal(unlearned.key_usage_, never.key_usage_)
    np.testing.assert_array_equal(unlearned.class_count_, never.class_count_)
    np.testing.assert_array_equal(
        unlearned.predict_proba(X_DIGITS), never.predict_proba(X_DIGITS)
    )


def unlearn_b(clf, b, weights=None):
    w = None if weights is None else weights[b]
    return clf.unlearn(X_DIGITS[b], Y_DIGITS[b], sample_weight=w)


# ------------------------------------------------------------ engine


def test_remove_counts_is_the_exact_inverse_of_add_counts_for_integer_weights():
    rng = np.random.RandomState(0)
    rows = torch.as_tensor(rng.randint(0, 40, size=(300, 5)))
    labels = torch.as_tensor(rng.randint(0, 3, size=300))
    weights = torch.as_tensor(rng.randint(0, 5, size=300), dtype=torch.float32)
    before = torch.as_tensor(rng.randint(0, 3, size=(40, 3)), dtype=torch.float32)
    counts = before.clone()
    add_counts(counts, rows, labels, weights)
    table, overdrawn = remove_counts(counts, rows[100:], labels[100:], weights[100:])
    expected = before.clone()
    add_counts(expected, rows[:100], labels[:100], weights[:100])
    assert overdrawn == 0
    np.testing.assert_array_equal(table.numpy(), expected.numpy())
    # Taking out more than was added: every entry that would go negative is counted.
    _, overdrawn = remove_counts(before, rows, labels, weights)
    removed = torch.zeros_like(before)
    add_counts(removed, rows, labels, weights)
    assert overdrawn == int((before - removed < 0).sum()) > 0


# ------------------------------------------------------------ exactness


# "auto": the temperature is fitted on a calibration sample of the training
# points; digits' 1797 points stay within its cap, so it is never thinned.
@pytest.mark.parametrize("temperature", [1.0, "auto"])
def test_unlearning_after_fit_equals_fit_without_the_samples(temperature):
    a, b = split()
    clf = counting(temperature=temperature).fit(X_DIGITS, Y_DIGITS)
    assert unlearn_b(clf, b) is clf
    never = counting(temperature=temperature).fit(X_DIGITS[a], Y_DIGITS[a])
    assert clf.temperature_ == never.temperature_
    assert_same_model(clf, never)


@pytest.mark.parametrize("temperature", [1.0, "auto"])
def test_unlearning_from_a_stream_equals_the_stream_without_the_samples(temperature):
    a, b = split(seed=1)
    clf = stream(counting(temperature=temperature), np.arange(len(Y_DIGITS)), seed=2)
    unlearn_b(clf, b[: len(b) // 2])  # in two calls, in another order
    unlearn_b(clf, b[len(b) // 2 :][::-1])
    assert_same_model(clf, stream(counting(temperature=temperature), a, seed=3))


@pytest.mark.parametrize("how", ["fit", "partial_fit"])
def test_integer_weights_unlearn_exactly(how):
    weights = np.random.RandomState(0).randint(0, 4, size=len(Y_DIGITS)).astype(float)
    a, b = split(seed=4)
    if how == "fit":
        clf = counting().fit(X_DIGITS, Y_DIGITS, sample_weight=weights)
        never = counting().fit(X_DIGITS[a], Y_DIGITS[a], sample_weight=weights[a])
    else:
        clf = stream(counting(), np.arange(len(Y_DIGITS)), weights)
        never = stream(counting(), a, weights)
    unlearn_b(clf, b, weights)
    assert_same_model(clf, never)


def test_non_integer_weights_unlearn_up_to_float32_rounding():
    """The promise: counts and probabilities within float32 rounding, integer
    state (classes, key usage) exact, counts never below zero."""
    weights = np.random.RandomState(0).uniform(0.1, 3.0, size=len(Y_DIGITS))
    a, b = split(seed=5)
    clf = stream(counting(), np.arange(len(Y_DIGITS)), weights)
    never = stream(counting(), a, weights)
    unlearn_b(clf, b, weights)
    np.testing.assert_array_equal(clf.classes_, never.classes_)
    np.testing.assert_array_equal(clf.key_usage_, never.key_usage_)
    assert clf.class_counts_.min() >= 0
    np.testing.assert_allclose(clf.class_counts_, never.class_counts_, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(clf.class_count_, never.class_count_, rtol=1e-12)
    np.testing.assert_allclose(
        clf.predict_proba(X_DIGITS), never.predict_proba(X_DIGITS), rtol=1e-4, atol=1e-6
    )


def test_keys_no_remaining_sample_fetches_are_exactly_zero_with_non_integer_weights():
    weights = np.random.RandomState(1).uniform(0.1, 3.0, size=len(Y_DIGITS))
    _, b = split(seed=6)
    clf = stream(counting(), np.arange(len(Y_DIGITS)), weights)
    unlearn_b(clf, b, weights)
    np.testing.assert_array_equal(clf.class_counts_[clf.key_usage_ == 0], 0.0)


def test_class_weight_balanced_follows_the_remaining_samples():
    a, b = split(seed=7, fraction=0.5, mask=Y_DIGITS < 3)  # unbalances classes 0-2
    clf = counting(class_weight="balanced").fit(X_DIGITS, Y_DIGITS)
    unlearn_b(clf, b)
    assert_same_model(clf, counting(class_weight="balanced").fit(X_DIGITS[a], Y_DIGITS[a]))


def test_a_pickled_model_unlearns_as_the_original():
    a, b = split(seed=10)
    clf = round_trip(counting().fit(X_DIGITS, Y_DIGITS), "pickle")
    unlearn_b(clf, b)
    assert_same_model(clf, counting().fit(X_DIGITS[a], Y_DIGITS[a]))


def test_unlearning_then_learning_again_restores_the_model():
    a, b = split(seed=8)
    clf = counting().fit(X_DIGITS, Y_DIGITS)
    before = counting().fit(X_DIGITS, Y_DIGITS)
    unlearn_b(clf, b)
    clf.partial_fit(X_DIGITS[b], Y_DIGITS[b])
    assert_same_model(clf, before)


# ------------------------------------------------------------ classes


@pytest.mark.parametrize("how", ["fit", "partial_fit"])
def test_a_class_whose_samples_all_go_leaves_classes_(how):
    gone = Y_DIGITS == 7
    a, b = np.flatnonzero(~gone), np.flatnonzero(gone)
    if how == "fit":
        clf = counting().fit(X_DIGITS, Y_DIGITS)
        never = counting().fit(X_DIGITS[a], Y_DIGITS[a])
    else:
        clf = stream(counting(), np.arange(len(Y_DIGITS)))
        never = stream(counting(), a)
    unlearn_b(clf, b)
    assert 7 not in clf.classes_
    assert_same_model(clf, never)


def test_a_class_unlearned_from_a_stream_can_come_back():
    gone = np.flatnonzero(Y_DIGITS == 7)
    clf = stream(counting(), np.arange(len(Y_DIGITS)))
    unlearn_b(clf, gone)
    clf.partial_fit(X_DIGITS[gone], Y_DIGITS[gone])
    assert_same_model(clf, stream(counting(), np.arange(len(Y_DIGITS))))


def test_a_class_given_upfront_stays_with_zero_counts():
    classes = np.arange(10)
    gone = Y_DIGITS == 7
    a, b = np.flatnonzero(~gone), np.flatnonzero(gone)
    clf = stream(counting(), np.arange(len(Y_DIGITS)), classes=classes)
    unlearn_b(clf, b)
    never = stream(counting(), a, classes=classes)
    np.testing.assert_array_equal(clf.classes_, classes)
    np.testing.assert_array_equal(clf.class_counts_[..., 7], 0.0)
    assert_same_model(clf, never)


def test_a_class_kept_only_by_zero_weight_samples_goes_with_them():
    """Weight-0 samples put their class in classes_ but no count anywhere (nor
    in key_usage_): unlearning them must remove the class all the same."""
    weights = np.ones(len(Y_DIGITS))
    weights[Y_DIGITS == 7] = 0.0
    a, b = np.flatnonzero(Y_DIGITS != 7), np.flatnonzero(Y_DIGITS == 7)
    clf = counting().fit(X_DIGITS, Y_DIGITS, sample_weight=weights)
    assert 7 in clf.classes_
    unlearn_b(clf, b[:5], weights)
    assert 7 in clf.classes_  # other weight-0 samples of 7 remain
    unlearn_b(clf, b[5:], weights)
    assert_same_model(clf, counting().fit(X_DIGITS[a], Y_DIGITS[a]))


def test_string_labels():
    labels = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven",
                       "eight", "nine"])[Y_DIGITS]
    a, b = split(seed=9)
    clf = counting().fit(X_DIGITS, labels)
    clf.unlearn(X_DIGITS[b], labels[b])
    never = counting().fit(X_DIGITS[a], labels[a])
    np.testing.assert_array_equal(clf.predict_proba(X_DIGITS), never.predict_proba(X_DIGITS))


# ------------------------------------------------------------ bad requests


@pytest.fixture
def fitted():
    return counting().fit(X_DIGITS[:600], Y_DIGITS[:600])


def test_samples_never_learned_raise_and_leave_the_model_untouched(fitted):
    before = fingerprint(fitted)
    # Learned once, taken out twice: the second time every count would go negative.
    fitted.unlearn(X_DIGITS[:50], Y_DIGITS[:50])
    after_first = fingerprint(fitted)
    assert after_first != before
    with pytest.raises(ValueError, match="cannot all have been learned"):
        fitted.unlearn(X_DIGITS[:50], Y_DIGITS[:50])
    assert fingerprint(fitted) == after_first


def test_a_sample_under_a_label_it_never_had_raises(fitted):
    before = fingerprint(fitted)
    # Relabel sample 0 (a 0) as 1: at its keys there are fewer 1s than needed.
    wrong = np.full(40, 1)
    zeros = np.flatnonzero(Y_DIGITS[:600] == 0)[:40]
    with pytest.raises(ValueError, match="below zero"):
        fitted.unlearn(X_DIGITS[zeros], wrong)
    assert fingerprint(fitted) == before


def test_a_sample_never_learned_is_caught_by_the_calibration_sample(fitted):
    """A near copy of a learned sample fetches the same keys, so no count goes
    negative; the calibration sample (every point, under its cap) has no such point."""
    before = fingerprint(fitted)
    near_copy = X_DIGITS[:1] + 1e-6
    np.testing.assert_array_equal(
        fitted.codebook_.transform(near_copy), fitted.codebook_.transform(X_DIGITS[:1])
    )
    with pytest.raises(ValueError, match="calibration sample"):
        fitted.unlearn(near_copy, Y_DIGITS[:1])
    assert fingerprint(fitted) == before


def test_weights_larger_than_learned_raise(fitted):
    before = fingerprint(fitted)
    with pytest.raises(ValueError, match="cannot all have been learned"):
        fitted.unlearn(X_DIGITS[:5], Y_DIGITS[:5], sample_weight=np.full(5, 1e4))
    assert fingerprint(fitted) == before


@pytest.mark.parametrize(
    "y, message",
    [([0, 1, 10], r"labels \[10\] that are not among the classes"),
     (["zero", "one", "two"], "string labels, but the classes are numbers")],
)
def test_labels_the_model_never_had_raise(fitted, y, message):
    before = fingerprint(fitted)
    with pytest.raises(ValueError, match=message):
        fitted.unlearn(X_DIGITS[:3], np.array(y))
    assert fingerprint(fitted) == before


def test_sgd_values_cannot_unlearn():
    clf = counting(value_update="sgd", max_iter=2).fit(X_DIGITS[:300], Y_DIGITS[:300])
    before = fingerprint(clf)
    with pytest.raises(ValueError, match="value_update='count'.*SGD"):
        clf.unlearn(X_DIGITS[:10], Y_DIGITS[:10])
    assert fingerprint(clf) == before


def test_taking_out_every_sample_of_a_growing_label_set_raises(fitted):
    before = fingerprint(fitted)
    with pytest.raises(ValueError, match="every sample"):
        fitted.unlearn(X_DIGITS[:600], Y_DIGITS[:600])
    assert fingerprint(fitted) == before


def test_taking_out_every_sample_of_a_fixed_label_set_leaves_zero_counts():
    clf = counting().partial_fit(X_DIGITS[:100], Y_DIGITS[:100], classes=np.arange(10))
    clf.unlearn(X_DIGITS[:100], Y_DIGITS[:100])
    np.testing.assert_array_equal(clf.class_counts_, 0.0)
    np.testing.assert_array_equal(clf.key_usage_, 0)
    np.testing.assert_allclose(clf.predict_proba(X_DIGITS[:3]), 0.1, rtol=1e-12)


def test_bad_inputs_raise_and_leave_the_model_untouched(fitted):
    before = fingerprint(fitted)
    with pytest.raises(ValueError, match="features"):
        fitted.unlearn(X_DIGITS[:5, :10], Y_DIGITS[:5])
    with pytest.raises(ValueError, match="sample_weight"):
        fitted.unlearn(X_DIGITS[:5], Y_DIGITS[:5], sample_weight=-np.ones(5))
    with pytest.raises(ValueError):
        fitted.unlearn(X_DIGITS[:5], Y_DIGITS[:4])
    assert fingerprint(fitted) == before


def test_unfitted_raises():
    with pytest.raises(NotFittedError):
        counting().unlearn(X_DIGITS[:5], Y_DIGITS[:5])
