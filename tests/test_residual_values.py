"""value_update="count-residual": counts plus per-key class residual sums.

Against a slow numpy reference, independence of the order and grouping of the
samples (within float tolerance: residual sums are float64 sums), locality (a
partial_fit changes only the statistics of the keys its samples fetched),
sample weights, sparse inputs and a pickle round trip.
"""

import pickle

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_digits
from sklearn.frozen import FrozenEstimator

from skkvb import KeyCodebook, KeyValueBottleneckClassifier
from skkvb.engine.values.residual import RESIDUAL_WEIGHT

X_DIGITS, Y_DIGITS = load_digits(return_X_y=True)
X_DIGITS = X_DIGITS[:300].astype(np.float32)
Y_DIGITS = Y_DIGITS[:300]
SMOOTHING = 0.1


def codebook():
    return FrozenEstimator(
        KeyCodebook(n_codebooks=8, n_keys=16, key_dim=4, random_state=0).fit(X_DIGITS)
    )


def residual_model(keys, **params):
    return KeyValueBottleneckClassifier(
        codebook=keys, value_update="count-residual", mask_unused_keys=False,
        random_state=0, **params,
    )


def reference_logits(keys, X_train, y_train, X_test, weights=None):
    """Per codebook, key and class: counts, residual sums and squared norms --
    then the mixture of the module docstring, in loops."""
    fitted = keys.estimator
    n_codebooks, n_keys, d = fitted.keys_.shape
    classes = np.unique(y_train)
    L = len(classes)
    weights = np.ones(len(y_train)) if weights is None else np.asarray(weights, float)

    def heads(X):
        return (X.astype(np.float64) @ fitted.projection_.astype(np.float64)).reshape(
            len(X), n_codebooks, d
        )

    keys_ = fitted.keys_.astype(np.float64)
    codes_tr, codes_te = fitted.transform(X_train), fitted.transform(X_test)
    H_tr, H_te = heads(X_train), heads(X_test)
    n = np.zeros((n_codebooks, n_keys, L))
    S = np.zeros((n_codebooks, n_keys, L, d))
    Q = np.zeros((n_codebooks, n_keys))
    for i, label in enumerate(np.searchsorted(classes, y_train)):
        for c in range(n_codebooks):
            k = codes_tr[i, c]
            r = H_tr[i, c] - keys_[c, k]
            n[c, k, label] += weights[i]
            S[c, k, label] += weights[i] * r
            Q[c, k] += weights[i] * r @ r
    variance = np.zeros(n_codebooks)
    for c in range(n_codebooks):
        seen = n[c] > 0
        ssw = Q[c].sum() - sum((S[c][seen] ** 2).sum(1) / n[c][seen])
        dof = n[c].sum() - seen.sum()
        variance[c] = ssw / (d * dof) if dof > 0 else Q[c].sum() / (d * n[c].sum())
    logits = np.zeros((len(X_test), L))
    for i in range(len(X_test)):
        posterior = np.zeros(L)
        for c in range(n_codebooks):
            k = codes_te[i, c]
            counts = n[c, k]
            values = np.log(counts + SMOOTHING) - np.log(counts.sum() + SMOOTHING * L)
            r = H_te[i, c] - keys_[c, k]
            means = S[c, k] / (counts[:, None] + 1.0)
            score = ((r - means) ** 2).sum(1) / (2 * variance[c])
            scores = values - RESIDUAL_WEIGHT * score
            posterior += np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
        logits[i] = np.log(posterior / n_codebooks)
    return logits


def test_logits_equal_a_slow_reference():
    keys = codebook()
    clf = residual_model(keys).fit(X_DIGITS[:200], Y_DIGITS[:200])
    expected = reference_logits(keys, X_DIGITS[:200], Y_DIGITS[:200], X_DIGITS[200:])
    np.testing.assert_allclose(clf.decision_function(X_DIGITS[200:]), expected, rtol=1e-4,
                               atol=1e-4)


def test_sample_weights_equal_a_slow_reference():
    keys = codebook()
    weights = np.random.RandomState(0).uniform(0, 3, 200)
    weights[:20] = 0.0
    clf = residual_model(keys).fit(X_DIGITS[:200], Y_DIGITS[:200], sample_weight=weights)
    expected = reference_logits(keys, X_DIGITS[:200], Y_DIGITS[:200], X_DIGITS[200:], weights)
    np.testing.assert_allclose(clf.decision_function(X_DIGITS[200:]), expected, rtol=1e-4,
                               atol=1e-4)


def test_class_incremental_equals_iid_and_any_order():
    keys = codebook()
    iid = residual_model(keys).fit(X_DIGITS, Y_DIGITS)
    stream = residual_model(keys)
    for pair in [(8, 9), (0, 1), (4, 5), (2, 3), (6, 7)]:  # classes arrive in phases
        phase = np.isin(Y_DIGITS, pair)
        stream.partial_fit(X_DIGITS[phase], Y_DIGITS[phase])
    shuffled = residual_model(keys)
    order = np.random.RandomState(1).permutation(len(Y_DIGITS))
    for part in np.array_split(order, 7):
        shuffled.partial_fit(X_DIGITS[part], Y_DIGITS[part], classes=np.arange(10))
    for other in (stream, shuffled):
        np.testing.assert_array_equal(other.classes_, iid.classes_)
        np.testing.assert_allclose(other.decision_function(X_DIGITS),
                                   iid.decision_function(X_DIGITS), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(other.predict(X_DIGITS), iid.predict(X_DIGITS))


def test_partial_fit_changes_only_the_fetched_keys():
    keys = codebook()
    clf = residual_model(keys).fit(X_DIGITS[:200], Y_DIGITS[:200])
    before = pickle.loads(pickle.dumps(clf._value_model))
    batch = X_DIGITS[200:210]
    clf.partial_fit(batch, Y_DIGITS[200:210])
    after = clf._value_model
    n_keys = keys.estimator.n_keys_
    fetched = np.zeros(after.table.shape[0], dtype=bool)
    codes = keys.estimator.transform(batch)
    fetched[(np.arange(codes.shape[1]) * n_keys + codes).ravel()] = True
    untouched = ~fetched
    np.testing.assert_array_equal(after.table[untouched], before.table[untouched])
    np.testing.assert_array_equal(after.slot[untouched], before.slot[untouched])
    old_slots = before.slot[untouched]
    old_slots = old_slots[old_slots >= 0]
    np.testing.assert_array_equal(after.sums[old_slots], before.sums[old_slots])
    np.testing.assert_array_equal(after.sq_sums[old_slots], before.sq_sums[old_slots])
    assert not np.array_equal(after.table[fetched], before.table[fetched])


def test_class_weight_adds_its_log_to_the_logits():
    keys = codebook()
    class_weight = {label: 0.5 + label / 4 for label in range(10)}
    weighted = residual_model(keys, class_weight=class_weight).fit(X_DIGITS, Y_DIGITS)
    plain = residual_model(keys).fit(X_DIGITS, Y_DIGITS)
    np.testing.assert_allclose(
        weighted.decision_function(X_DIGITS),
        plain.decision_function(X_DIGITS) + np.log([class_weight[k] for k in range(10)]),
        rtol=1e-5, atol=1e-5,
    )


def test_sparse_input_equals_dense():
    keys = codebook()
    dense = residual_model(keys).fit(X_DIGITS, Y_DIGITS)
    sparse = residual_model(keys).fit(sp.csr_matrix(X_DIGITS), Y_DIGITS)
    np.testing.assert_array_equal(sparse.decision_function(sp.csr_matrix(X_DIGITS)),
                                  dense.decision_function(X_DIGITS))


def test_pickle_round_trip_predicts_the_same_and_keeps_learning():
    keys = codebook()
    clf = residual_model(keys).fit(X_DIGITS[:150], Y_DIGITS[:150])
    copy = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(copy.predict_proba(X_DIGITS), clf.predict_proba(X_DIGITS))
    clf.partial_fit(X_DIGITS[150:], Y_DIGITS[150:])
    copy.partial_fit(X_DIGITS[150:], Y_DIGITS[150:])
    np.testing.assert_array_equal(copy.decision_function(X_DIGITS),
                                  clf.decision_function(X_DIGITS))


def test_residual_term_changes_predictions_from_counting():
    keys = codebook()
    counting = KeyValueBottleneckClassifier(
        codebook=keys, value_update="count", mask_unused_keys=False
    ).fit(X_DIGITS, Y_DIGITS)
    residual = residual_model(keys).fit(X_DIGITS, Y_DIGITS)
    np.testing.assert_array_equal(residual.class_counts_, counting.class_counts_)
    assert not np.allclose(residual.decision_function(X_DIGITS),
                           counting.decision_function(X_DIGITS))


def test_unlearn_refuses_residual_values_and_leaves_the_model_as_it_was():
    clf = residual_model(codebook()).fit(X_DIGITS, Y_DIGITS)
    before = clf.decision_function(X_DIGITS)
    with pytest.raises(ValueError, match="needs counting values.*not implemented for this rule"):
        clf.unlearn(X_DIGITS[:10], Y_DIGITS[:10])
    np.testing.assert_array_equal(clf.decision_function(X_DIGITS), before)
