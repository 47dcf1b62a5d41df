"""Sample and class weights of KeyValueBottleneckClassifier, and their way
through scikit-learn's Pipeline and GridSearchCV (metadata routing).

Counting values promise exact equalities, tested bit for bit with keys given
fitted: a weight of 2 is the sample given twice, a weight of 0 the sample left
out, and class weights are sample weights by class. SGD values promise the
weighted loss. StreamingPipeline's routing is in test_streaming.py.
"""

import numpy as np
import pytest
from _helpers import X_IRIS, Y_IRIS, fetched_rows, fingerprint
from sklearn import config_context
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from skkvb import KeyCodebook, KeyValueBottleneckClassifier


def small_keys(**params):
    return KeyCodebook(n_codebooks=8, n_keys=16, key_dim=4, random_state=0, **params)


@pytest.fixture(scope="module")
def iris_keys():
    return FrozenEstimator(small_keys().fit(X_IRIS))


@pytest.fixture(scope="module")
def imbalanced():
    """Digits 0-3 with 16, 32, 64 and 16 samples: "balanced" weighs them 2, 1,
    0.5 and 2, powers of two, so weighted sums are exact in float32."""
    X, y = load_digits(return_X_y=True)
    rows = np.concatenate([np.flatnonzero(y == k)[:n] for k, n in enumerate([16, 32, 64, 16])])
    rows = np.random.RandomState(0).permutation(rows)
    X, y = X[rows] / 16, y[rows]
    return X, y, FrozenEstimator(small_keys().fit(X))


BALANCED = {0: 2.0, 1: 1.0, 2: 0.5, 3: 2.0}


def model(keys, rule="count", **params):
    return KeyValueBottleneckClassifier(
        codebook=keys, value_update=rule, random_state=0, device="cpu", **params
    )


def assert_same_predictions(a, b, X):
    np.testing.assert_array_equal(a.values_, b.values_)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    np.testing.assert_array_equal(a.decision_function(X), b.decision_function(X))


def assert_same_counts(a, b, X):
    assert_same_predictions(a, b, X)
    np.testing.assert_array_equal(a.class_counts_, b.class_counts_)
    np.testing.assert_array_equal(a.class_count_, b.class_count_)


# ------------------------------------------------- sample weights, counting


def test_weight_two_is_a_duplicate_and_zero_a_dropped_sample(iris_keys):
    weights = np.random.RandomState(0).randint(0, 3, size=150)  # 0, 1 or 2
    weighted = model(iris_keys).fit(X_IRIS, Y_IRIS, sample_weight=weights)
    repeated = model(iris_keys).fit(np.repeat(X_IRIS, weights, 0), np.repeat(Y_IRIS, weights))
    assert_same_counts(weighted, repeated, X_IRIS)
    # key_usage_ counts each sample of positive weight once: that of the samples kept.
    kept = model(iris_keys).fit(X_IRIS[weights > 0], Y_IRIS[weights > 0])
    np.testing.assert_array_equal(weighted.key_usage_, kept.key_usage_)


def test_zero_weight_is_exactly_a_dropped_sample(iris_keys):
    weights = (np.arange(150) % 3 > 0).astype(float)
    weighted = model(iris_keys).fit(X_IRIS, Y_IRIS, sample_weight=weights)
    dropped = model(iris_keys).fit(X_IRIS[weights > 0], Y_IRIS[weights > 0])
    assert_same_counts(weighted, dropped, X_IRIS)
    np.testing.assert_array_equal(weighted.key_usage_, dropped.key_usage_)


def test_weighted_fit_equals_a_weighted_stream_in_any_order(iris_keys):
    weights = np.random.RandomState(1).randint(0, 4, size=150).astype(float)
    whole = model(iris_keys).fit(X_IRIS, Y_IRIS, sample_weight=weights)
    stream = model(iris_keys)
    for batch in np.array_split(np.random.RandomState(2).permutation(150), 6):
        stream.partial_fit(X_IRIS[batch], Y_IRIS[batch], sample_weight=weights[batch])
    assert_same_counts(whole, stream, X_IRIS)
    np.testing.assert_array_equal(whole.key_usage_, stream.key_usage_)


def test_keys_fitted_here_leave_out_zero_weight_rows_and_ignore_the_others():
    weights = np.where(Y_IRIS == 2, 0.0, 1.0)
    codebook = small_keys()
    clf = model(codebook).fit(X_IRIS, Y_IRIS, sample_weight=weights)
    expected = clone(codebook).fit(X_IRIS[weights > 0]).keys_
    np.testing.assert_array_equal(clf.codebook_.keys_, expected)
    heavier = model(codebook).fit(X_IRIS, Y_IRIS, sample_weight=3 * weights)
    np.testing.assert_array_equal(heavier.codebook_.keys_, expected)
    first_batch = model(codebook).partial_fit(X_IRIS, Y_IRIS, sample_weight=weights)
    np.testing.assert_array_equal(first_batch.codebook_.keys_, expected)


def test_all_zero_weights(iris_keys):
    zeros = np.zeros(150)
    fitted = model(iris_keys).fit(X_IRIS, Y_IRIS)
    before = fingerprint(fitted)
    with pytest.raises(ValueError, match="sample_weight is zero for every sample"):
        fitted.fit(X_IRIS, Y_IRIS, sample_weight=zeros)
    assert fingerprint(fitted) == before
    # A stream may start with a batch of zero weight when the keys are given ...
    stream = model(iris_keys).partial_fit(X_IRIS, Y_IRIS, sample_weight=zeros)
    assert stream.class_counts_.sum() == 0 and stream.key_usage_.sum() == 0
    # ... but not when they are to be fitted on it.
    unfitted = model(small_keys())
    with pytest.raises(ValueError, match="sample_weight is zero for every sample"):
        unfitted.partial_fit(X_IRIS, Y_IRIS, sample_weight=zeros)
    assert not hasattr(unfitted, "classes_")


# ------------------------------------------------------ sample weights, SGD


def test_sgd_fit_minimises_the_weighted_loss(iris_keys):
    doubled = model(iris_keys, "sgd", learning_rate=2.0, max_iter=3).fit(X_IRIS, Y_IRIS)
    weighted = model(iris_keys, "sgd", learning_rate=1.0, max_iter=3)
    weighted.fit(X_IRIS, Y_IRIS, sample_weight=np.full(150, 2.0))
    np.testing.assert_allclose(weighted.values_, doubled.values_, rtol=1e-5, atol=1e-6)

    # Rows that only samples of weight zero fetch are never trained nor used.
    weights = np.where(Y_IRIS == 1, 0.0, 1.0)
    clf = model(iris_keys, "sgd", max_iter=3).fit(X_IRIS, Y_IRIS, sample_weight=weights)
    only_zero = fetched_rows(clf.codebook_, X_IRIS[weights == 0])
    only_zero &= ~fetched_rows(clf.codebook_, X_IRIS[weights > 0])
    assert only_zero.any()
    np.testing.assert_array_equal(clf.values_[only_zero], 0.0)
    np.testing.assert_array_equal(clf.key_usage_[only_zero], 0)


# ------------------------------------------------------ bad sample weights


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
@pytest.mark.parametrize(
    "sample_weight, message",
    [
        (np.array([1.0, -1.0, 1.0, 1.0]), "Negative values in data passed to `sample_weight`"),
        (np.array([1.0, np.nan, 1.0, 1.0]), "Input sample_weight contains NaN"),
        (np.array([1.0, np.inf, 1.0, 1.0]), "Input sample_weight contains infinity"),
        (np.ones(3), r"sample_weight.shape == \(3,\), expected \(4,\)"),
        (np.ones((4, 1)), "Sample weights must be 1D"),
    ],
)
@pytest.mark.parametrize("rule", ["count", "sgd"])
def test_bad_sample_weight_names_it_and_changes_nothing(
    iris_keys, rule, method, sample_weight, message
):
    clf = model(iris_keys, rule).fit(X_IRIS, Y_IRIS)
    before = fingerprint(clf)
    with pytest.raises(ValueError, match=message):
        getattr(clf, method)(X_IRIS[48:52], Y_IRIS[48:52], sample_weight=sample_weight)
    assert fingerprint(clf) == before


# ----------------------------------------------------------- class weights


@pytest.mark.parametrize("rule", ["count", "sgd"])
def test_balanced_equals_the_sample_weights_it_stands_for(imbalanced, rule):
    X, y, keys = imbalanced
    explicit = model(keys, rule).fit(X, y, sample_weight=np.vectorize(BALANCED.get)(y))
    for class_weight in ("balanced", BALANCED):
        weighted = model(keys, rule, class_weight=class_weight).fit(X, y)
        assert_same_predictions(weighted, explicit, X)
    np.testing.assert_array_equal(weighted.class_count_, [16, 32, 64, 16])


def test_balanced_counting_is_order_independent(imbalanced):
    X, y, keys = imbalanced
    whole = model(keys, class_weight="balanced").fit(X, y)
    for order in (np.argsort(y, kind="stable"), np.random.RandomState(3).permutation(len(y))):
        stream = model(keys, class_weight="balanced")
        for batch in np.array_split(order, 4):  # class-incremental, then shuffled
            stream.partial_fit(X[batch], y[batch])
        assert_same_counts(stream, whole, X)


def test_counting_reads_class_weight_at_prediction(imbalanced):
    X, y, keys = imbalanced
    later = model(keys).fit(X, y).set_params(class_weight="balanced")
    assert_same_counts(later, model(keys, class_weight="balanced").fit(X, y), X)


def test_sgd_balanced_weighs_each_batch_by_the_totals_so_far(imbalanced):
    """SGD learns each batch once, with the class totals seen up to and
    including it: the same as those totals' weights given as sample weights."""
    X, y, keys = imbalanced
    balanced, explicit = model(keys, "sgd", class_weight="balanced"), model(keys, "sgd")
    totals = np.zeros(4)
    for batch in np.array_split(np.argsort(y, kind="stable"), 3):
        totals += np.bincount(y[batch], minlength=4)
        seen = totals > 0
        weights = totals.sum() / (seen.sum() * np.where(seen, totals, 1.0))
        balanced.partial_fit(X[batch], y[batch])
        explicit.partial_fit(X[batch], y[batch], sample_weight=weights[y[batch]])
    assert_same_predictions(balanced, explicit, X)


@pytest.mark.parametrize("rule", ["count", "sgd"])
def test_a_dict_may_name_a_class_before_it_arrives(imbalanced, rule):
    X, y, keys = imbalanced
    weighted, explicit = model(keys, rule, class_weight={3: 2.0}), model(keys, rule)
    for batch in np.array_split(np.argsort(y, kind="stable"), 4):
        weighted.partial_fit(X[batch], y[batch])
        explicit.partial_fit(X[batch], y[batch], sample_weight=np.where(y[batch] == 3, 2.0, 1.0))
    assert_same_predictions(weighted, explicit, X)


@pytest.mark.parametrize(
    "class_weight, message",
    [
        ({0: -1.0}, r"class_weight\[0\] must be a finite number >= 0; got -1.0"),
        ({0: np.nan}, r"class_weight\[0\] must be a finite number >= 0; got nan"),
        ({1: np.inf}, r"class_weight\[1\] must be a finite number >= 0; got inf"),
        ({0: "2"}, r"class_weight\[0\] must be a finite number >= 0; got '2'"),
        ({0: True}, r"class_weight\[0\] must be a finite number >= 0; got True"),
        ({"0": 1.0}, "class_weight has the label '0', but the classes are numbers"),
        ({7: 1.0}, r"class_weight names labels \[7\] that are not among the classes"),
        ({0: 1e38}, "rescale class_weight"),
    ],
)
@pytest.mark.parametrize("how", ["fit", "partial_fit", "predict"])
def test_bad_class_weight_names_it_and_changes_nothing(iris_keys, class_weight, message, how):
    clf = model(iris_keys).fit(X_IRIS, Y_IRIS, sample_weight=np.full(150, 1e30))
    before = fingerprint(clf)
    clf.set_params(class_weight=class_weight)
    with pytest.raises(ValueError, match=message):
        if how == "predict":  # counting reads it at prediction
            clf.predict(X_IRIS)
        else:
            getattr(clf, how)(X_IRIS, Y_IRIS)
    assert fingerprint(clf.set_params(class_weight=None)) == before


def test_a_growing_class_list_keeps_unknown_labels_for_later(iris_keys):
    clf = model(iris_keys, class_weight={7: 2.0}).partial_fit(X_IRIS, Y_IRIS)
    assert clf.classes_.tolist() == [0, 1, 2]
    fixed = model(iris_keys, class_weight={7: 2.0})
    with pytest.raises(ValueError, match=r"class_weight names labels \[7\]"):
        fixed.partial_fit(X_IRIS, Y_IRIS, classes=[0, 1, 2])
    assert not hasattr(fixed, "classes_")


# -------------------------------------------------------- metadata routing


def test_pipeline_fit_routes_sample_weight_to_the_classifier(iris_keys):
    weights = np.random.RandomState(4).randint(0, 4, size=150).astype(float)
    scaler = StandardScaler().fit(X_IRIS)
    direct = model(iris_keys).fit(scaler.transform(X_IRIS), Y_IRIS, sample_weight=weights)
    with config_context(enable_metadata_routing=True):
        pipe = Pipeline(
            [
                ("scale", StandardScaler().set_fit_request(sample_weight=False)),
                ("clf", model(iris_keys).set_fit_request(sample_weight=True)),
            ]
        ).fit(X_IRIS, Y_IRIS, sample_weight=weights)
    assert_same_counts(pipe[-1], direct, scaler.transform(X_IRIS))
    # Without routing, the step__param form, as for any Pipeline.
    pipe = Pipeline([("scale", StandardScaler()), ("clf", model(iris_keys))])
    pipe.fit(X_IRIS, Y_IRIS, clf__sample_weight=weights)
    assert_same_counts(pipe[-1], direct, scaler.transform(X_IRIS))


def test_grid_search_routes_sample_weight_to_every_fit(iris_keys):
    weights = np.random.RandomState(5).randint(0, 4, size=150).astype(float)
    with config_context(enable_metadata_routing=True):
        clf = model(iris_keys).set_fit_request(sample_weight=True)
        search = GridSearchCV(
            clf.set_score_request(sample_weight=True),
            {"count_smoothing": [0.1, 1.0]},
            cv=StratifiedKFold(3),
        ).fit(X_IRIS, Y_IRIS, sample_weight=weights)
        unrouted = GridSearchCV(model(iris_keys), {"count_smoothing": [0.1, 1.0]}, cv=3)
        with pytest.raises(ValueError, match="sample_weight"):  # not requested: an error
            unrouted.fit(X_IRIS, Y_IRIS, sample_weight=weights)
    direct = model(iris_keys, **search.best_params_).fit(X_IRIS, Y_IRIS, sample_weight=weights)
    assert_same_counts(search.best_estimator_, direct, X_IRIS)
    # Each split's model learned the weights of its training rows, and was scored with weights.
    train, test = next(StratifiedKFold(3).split(X_IRIS, Y_IRIS))
    fold = model(iris_keys, count_smoothing=0.1).fit(
        X_IRIS[train], Y_IRIS[train], sample_weight=weights[train]
    )
    expected = fold.score(X_IRIS[test], Y_IRIS[test], sample_weight=weights[test])
    index = search.cv_results_["params"].index({"count_smoothing": 0.1})
    assert search.cv_results_["split0_test_score"][index] == expected
