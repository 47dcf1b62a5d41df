"""The benchmark's peers: scikit-learn conformance and streaming behaviour."""

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from skkvb.bench import (
    MLPProbe,
    NearestClassMean,
    RandomReLURidgeClassifier,
    SGDLinearProbe,
    StreamingLDA,
)

PEERS = [
    StreamingLDA(),
    NearestClassMean(),
    NearestClassMean(metric="cosine"),
    RandomReLURidgeClassifier(n_components=200),
    SGDLinearProbe(),
    MLPProbe(),
]


def _small_ranpac(**params):
    return RandomReLURidgeClassifier(n_components=500, **params)


STATISTICS = [StreamingLDA, NearestClassMean, _small_ranpac]

# Expected failures of scikit-learn's common checks, with the reason for each.
EXPECTED_FAILED_CHECKS = {}


@parametrize_with_checks(PEERS, expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def _class_incremental(estimator, X, y, n_phases=5, epochs=1):
    for group in np.array_split(np.unique(y), n_phases):
        mask = np.isin(y, group)
        for _ in range(epochs):
            estimator.partial_fit(X[mask], y[mask])
    return estimator


@pytest.mark.parametrize("make", STATISTICS)
def test_statistics_peers_do_not_depend_on_order(make, digits_split):
    """Exact running statistics: class-incremental equals one batch of everything."""
    X, X_test, y, _ = digits_split
    params = {"random_state": 0} if make is _small_ranpac else {}
    streamed = _class_incremental(make(**params), X, y)
    at_once = make(**params).partial_fit(X, y)
    np.testing.assert_array_equal(streamed.classes_, np.arange(10))
    np.testing.assert_allclose(
        streamed.decision_function(X_test), at_once.decision_function(X_test), atol=1e-6
    )


@pytest.mark.parametrize(
    "estimator, floor",
    [
        (StreamingLDA(), 0.9),
        (NearestClassMean(), 0.85),
        (RandomReLURidgeClassifier(n_components=1000, random_state=0), 0.95),
    ],
)
def test_statistics_peers_learn_digits(estimator, floor, digits_split):
    X, X_test, y, y_test = digits_split
    assert _class_incremental(estimator, X, y).score(X_test, y_test) > floor


@pytest.mark.parametrize("make", [SGDLinearProbe, MLPProbe])
def test_gradient_probes_forget(make, digits_split):
    """Trained phase after phase, the last phase's classes take over the predictions."""
    X, X_test, y, y_test = digits_split
    iid = make(random_state=0)
    for _ in range(20):
        iid.partial_fit(X, y)
    incremental = _class_incremental(make(random_state=0), X, y, epochs=20)
    assert iid.score(X_test, y_test) > 0.9
    assert incremental.score(X_test, y_test) < iid.score(X_test, y_test) - 0.3
    last_phase = np.array_split(np.arange(10), 5)[-1]  # a fifth of the test set
    assert np.isin(incremental.predict(X_test), last_phase).mean() > 0.4


def test_growing_label_set_matches_classes_given_upfront(digits_split):
    """A new class starts as a copy of the spare output: exactly the fixed-label run."""
    X, X_test, y, _ = digits_split
    growing = _class_incremental(SGDLinearProbe(shuffle=False, random_state=0), X, y, epochs=2)
    fixed = SGDLinearProbe(shuffle=False, random_state=0)
    for group in np.array_split(np.arange(10), 5):
        mask = np.isin(y, group)
        for _ in range(2):
            fixed.partial_fit(X[mask], y[mask], classes=np.arange(10))
    np.testing.assert_allclose(
        growing.predict_proba(X_test), fixed.predict_proba(X_test), rtol=1e-10
    )


FAST_PEERS = PEERS[:4] + [SGDLinearProbe(eta0=0.1), MLPProbe(learning_rate_init=0.01)]


@pytest.mark.parametrize("estimator", FAST_PEERS, ids=lambda est: repr(est))
def test_labels_grow_in_sorted_order(estimator):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(60, 4)) + np.repeat(np.eye(4)[:3] * 6, 20, axis=0)
    y = np.repeat(np.array(["c", "a", "b"]), 20)
    epochs = 20 if hasattr(estimator, "max_iter") else 1
    for _ in range(epochs):
        estimator.partial_fit(X[:20], y[:20])
    assert estimator.classes_.tolist() == ["c"]
    assert set(estimator.predict(X)) == {"c"}
    for _ in range(epochs):
        estimator.partial_fit(X[20:], y[20:])
    assert estimator.classes_.tolist() == ["a", "b", "c"]
    assert np.mean(estimator.predict(X[20:]) == y[20:]) > 0.9


@pytest.mark.parametrize("make", STATISTICS)
def test_classes_given_upfront_masks_unseen(make):
    X = np.array([[0.0, 1.0], [1.0, 0.0], [0.1, 0.9]])
    clf = make().partial_fit(X, [0, 1, 0], classes=[0, 1, 2])
    assert clf.classes_.tolist() == [0, 1, 2]
    assert np.all(np.isneginf(clf.decision_function(X)[:, 2]))
    with pytest.raises(ValueError, match=r"not in the classes given"):
        clf.partial_fit(X, [0, 1, 3])


def test_ncm_rejects_unknown_metric():
    with pytest.raises(ValueError, match="metric"):
        NearestClassMean(metric="manhattan").partial_fit([[0.0], [1.0]], [0, 1])
