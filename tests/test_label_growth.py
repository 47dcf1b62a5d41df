"""Label sets of KeyValueBottleneckClassifier: growing (no ``classes``) or fixed
(``classes`` on the first partial_fit), kinds of labels, the sorted insertion of
new classes, and class-incremental streams that end where i.i.d. training does.

Bad ``classes`` and labels on a first call are in test_validation.py; the
benchmark's peers share the label-set helper and are tested in test_peers.py.
"""

import numpy as np
import pytest
from _helpers import (
    X_IRIS,
    Y_IRIS,
    class_incremental,
    fetched_rows,
    fingerprint,
    small_codebook,
    tiny_sgd_classifier,
)
from _strategies import PROPERTY, data_arrays, draw_list, fitted_codebooks
from hypothesis import event, given
from hypothesis import strategies as st
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import SGDClassifier

from skkvb import KeyValueBottleneckClassifier

# ------------------------------------------------------------ growing sets


def test_growing_label_set_keeps_old_values_and_inserts_in_sorted_order():
    X, y = X_IRIS, Y_IRIS
    # Keys stay as the first batch fitted them, so the rows fetched are known upfront.
    clf = KeyValueBottleneckClassifier(
        codebook=small_codebook(), value_update="sgd", random_state=0, reseed_unused_keys=False
    )
    clf.partial_fit(X[y == 2], y[y == 2])
    np.testing.assert_array_equal(clf.classes_, [2])
    old = clf.values_[..., 0].copy()
    fetched = fetched_rows(clf.codebook_, X[y == 0])
    clf.partial_fit(X[y == 0], y[y == 0])
    np.testing.assert_array_equal(clf.classes_, [0, 2])
    np.testing.assert_array_equal(clf.values_[..., 1][~fetched], old[~fetched])
    # A new class starts where a never-seen class stands under a fixed softmax:
    # below class 2 on the rows class 2 trained (it received its negative updates).
    trained = clf.key_usage_ > 0
    assert (clf.values_[..., 0][trained & ~fetched] < clf.values_[..., 1][trained & ~fetched]).all()
    assert clf.predict_proba(X).shape == (150, 2)


@PROPERTY
@given(data=st.data())
def test_growing_classes_keeps_the_order_of_old_classes_where_codes_were_not_trained(data):
    n_features = data.draw(st.integers(1, 5), label="n_features")
    X_old = data.draw(data_arrays(st.integers(2, 40), n_features), label="X_old")
    X_new = data.draw(data_arrays(st.integers(1, 40), n_features), label="X_new") + 15.0
    probes = data.draw(data_arrays(st.integers(1, 30), n_features), label="probes")
    codebook = FrozenEstimator(
        data.draw(fitted_codebooks(n_features, np.concatenate([X_old, X_new])), label="codebook")
    )
    y_old = draw_list(data, st.integers(0, 3), len(X_old), "y_old")
    y_old[:2] = [0, 1]  # at least two old classes to order
    # The new phase brings classes 4 and up, and may bring old ones again.
    y_new = draw_list(data, st.integers(0, 6), len(X_new), "y_new")
    y_new[0] = data.draw(st.integers(4, 6))
    clf = KeyValueBottleneckClassifier(
        codebook=codebook,
        value_update="sgd",
        mask_unused_keys=data.draw(st.booleans(), label="mask"),
        batch_size=data.draw(st.integers(1, 32), label="batch_size"),
        partial_fit_max_iter=data.draw(st.integers(1, 3), label="epochs"),
        random_state=0,
    ).partial_fit(X_old, y_old)
    old_classes = clf.classes_.copy()
    # The codes a probe reads with: nearest *used* key when masking.
    codes_before = clf._codes(probes, clf._key_mask()).numpy()
    proba_before = clf.predict_proba(probes)
    scores_before = clf.decision_function(probes)

    clf.partial_fit(X_new, y_new)

    codes_after = clf._codes(probes, clf._key_mask()).numpy()
    trained = fetched_rows(codebook, X_new)
    untrained = (codes_after == codes_before).all(1) & ~trained[
        np.arange(codes_after.shape[1]), codes_after
    ].any(1)
    event(f"probes whose codes were not trained: {'some' if untrained.any() else 'none'}")
    old = np.searchsorted(clf.classes_, old_classes)
    proba_after = clf.predict_proba(probes)[:, old]
    order_before = np.sign(proba_before[:, :, None] - proba_before[:, None, :])
    order_after = np.sign(proba_after[:, :, None] - proba_after[:, None, :])
    np.testing.assert_array_equal(order_after[untrained], order_before[untrained])
    # Stronger: the old classes' logits of those probes are bit-identical.
    logits_after = clf.decision_function(probes)[:, old]
    if len(old_classes) == 2:
        logits_after = logits_after[:, 1] - logits_after[:, 0]
    np.testing.assert_array_equal(logits_after[untrained], scores_before[untrained])


# -------------------------------------------------------------- fixed sets


def test_unknown_label_with_fixed_classes_raises_and_changes_nothing():
    clf = KeyValueBottleneckClassifier(codebook=small_codebook(), random_state=0)
    clf.partial_fit(X_IRIS[Y_IRIS < 2], Y_IRIS[Y_IRIS < 2], classes=[0, 1])
    state = fingerprint(clf)
    with pytest.raises(ValueError, match=r"labels \[2\] that are not in the classes"):
        clf.partial_fit(X_IRIS, Y_IRIS)
    assert fingerprint(clf) == state
    with pytest.raises(ValueError, match="classes may only be given on the first call"):
        clf.partial_fit(X_IRIS[Y_IRIS < 2], Y_IRIS[Y_IRIS < 2], classes=[0, 1, 2])
    assert fingerprint(clf) == state


# ----------------------------------------------------------- label kinds


def test_labels_keep_their_type_across_partial_fit_calls():
    numbers = tiny_sgd_classifier().fit(X_IRIS, Y_IRIS)
    before = fingerprint(numbers)
    message = "y holds string labels, but the classes seen so far are numbers"
    with pytest.raises(ValueError, match=message):
        numbers.partial_fit(X_IRIS[:3], ["0", "1", "2"])
    assert fingerprint(numbers) == before

    strings = tiny_sgd_classifier().partial_fit(X_IRIS, np.array(["a", "b", "c"])[Y_IRIS])
    before = fingerprint(strings)
    message = "y holds number labels, but the classes seen so far are strings"
    with pytest.raises(ValueError, match=message):
        strings.partial_fit(X_IRIS[:3], [0, 1, 2])
    assert fingerprint(strings) == before
    strings.partial_fit(X_IRIS[:3], ["a", "d", "d"])  # a new string class is fine
    assert strings.classes_.tolist() == ["a", "b", "c", "d"]


# ------------------------------------------------- class-incremental = i.i.d.


@pytest.mark.parametrize("classes_upfront", [True, False], ids=["classes-given", "classes-grow"])
def test_class_incremental_digits_matches_iid(digits_split, digits_codebook, classes_upfront):
    """SGD values: within two points of i.i.d. training, with no replay."""
    X_train, X_test, y_train, y_test = digits_split
    iid = KeyValueBottleneckClassifier(
        codebook=digits_codebook, value_update="sgd", max_iter=30, random_state=0
    )
    iid_accuracy = iid.fit(X_train, y_train).score(X_test, y_test)

    stream = KeyValueBottleneckClassifier(
        codebook=digits_codebook, value_update="sgd", partial_fit_max_iter=30, random_state=0
    )
    for X_phase, y_phase in class_incremental(X_train, y_train):
        stream.partial_fit(X_phase, y_phase, classes=np.arange(10) if classes_upfront else None)
    accuracy = stream.score(X_test, y_test)

    assert accuracy >= 0.93
    assert abs(accuracy - iid_accuracy) <= 0.02
    np.testing.assert_array_equal(stream.classes_, np.arange(10))


@pytest.mark.parametrize("classes_upfront", [True, False], ids=["classes-given", "classes-grow"])
def test_class_incremental_is_bit_identical_to_iid(digits_split, digits_codebook, classes_upfront):
    """Counting values: integer counts are exact in float32, so the tables and
    every prediction are bit-identical (not merely close)."""
    X_train, X_test, y_train, _ = digits_split
    iid = KeyValueBottleneckClassifier(codebook=digits_codebook, value_update="count")
    iid.fit(X_train, y_train)
    stream = KeyValueBottleneckClassifier(codebook=digits_codebook, value_update="count")
    for X_phase, y_phase in class_incremental(X_train, y_train):
        stream.partial_fit(X_phase, y_phase, classes=np.arange(10) if classes_upfront else None)
    np.testing.assert_array_equal(stream.classes_, iid.classes_)
    np.testing.assert_array_equal(stream.class_counts_, iid.class_counts_)
    np.testing.assert_array_equal(stream.key_usage_, iid.key_usage_)
    np.testing.assert_array_equal(stream.predict_proba(X_test), iid.predict_proba(X_test))


def test_digits_class_incremental_accuracy_is_at_least_sgds(digits_split, digits_codebook):
    X_train, X_test, y_train, y_test = digits_split
    sgd = KeyValueBottleneckClassifier(
        codebook=digits_codebook, value_update="sgd", partial_fit_max_iter=30, random_state=0
    )
    count = KeyValueBottleneckClassifier(codebook=digits_codebook, value_update="count")
    for X_phase, y_phase in class_incremental(X_train, y_train):
        sgd.partial_fit(X_phase, y_phase)
        count.partial_fit(X_phase, y_phase)
    assert count.score(X_test, y_test) >= sgd.score(X_test, y_test)
    assert count.score(X_test, y_test) >= 0.95


def test_sgd_linear_probe_forgets_in_the_same_stream(digits_split):
    """The control: a linear probe trained by SGD on the same stream forgets."""
    X_train, X_test, y_train, y_test = digits_split
    probe = SGDClassifier(loss="log_loss", random_state=0)
    for X_phase, y_phase in class_incremental(X_train, y_train):
        for _ in range(30):
            probe.partial_fit(X_phase, y_phase, classes=np.arange(10))
    assert probe.score(X_test, y_test) < 0.5
