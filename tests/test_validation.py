"""Inputs of every public estimator: the forms of X they accept (sparse, data
frames, any numeric dtype, single samples) and what they refuse with a clear
error -- bad X, labels, ``classes``, sample weights, hyperparameters -- leaving
the estimator exactly as it was.

Failures after validation and interruptions are in test_persistence.py; the
encoder's own parameters in test_backbone.py.
"""

import copy
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from _helpers import (
    X_IRIS,
    Y_IRIS,
    ShapeAgnostic,
    fingerprint,
    small_codebook,
    tiny_codebook,
    tiny_sgd_classifier,
)
from sklearn.datasets import load_digits
from sklearn.frozen import FrozenEstimator
from sklearn.utils._param_validation import InvalidParameterError

import skkvb._encoding
from skkvb import FrozenBackboneTransformer, KeyCodebook, KeyValueBottleneckClassifier

# ---------------------------------------------------------------- bad X

CALLS = {
    "KeyCodebook": {
        "fit": lambda est, X, y: est.fit(X),
        "partial_fit": lambda est, X, y: est.partial_fit(X),
        "transform": lambda est, X, y: est.transform(X),
        "fit_transform": lambda est, X, y: est.fit_transform(X),
    },
    "KeyValueBottleneckClassifier": {
        "fit": lambda est, X, y: est.fit(X, y),
        "partial_fit": lambda est, X, y: est.partial_fit(X, y),
        "predict": lambda est, X, y: est.predict(X),
        "predict_proba": lambda est, X, y: est.predict_proba(X),
        "predict_log_proba": lambda est, X, y: est.predict_log_proba(X),
        "decision_function": lambda est, X, y: est.decision_function(X),
        "score": lambda est, X, y: est.score(X, y),
    },
    "FrozenBackboneTransformer": {
        "fit": lambda est, X, y: est.fit(X),
        "transform": lambda est, X, y: est.transform(X),
        "fit_transform": lambda est, X, y: est.fit_transform(X),
    },
    "StreamingPipeline": {
        "partial_fit": lambda est, X, y: est.partial_fit(X, y),
        "predict": lambda est, X, y: est.predict(X),
        "predict_proba": lambda est, X, y: est.predict_proba(X),
        "score": lambda est, X, y: est.score(X, y),
    },
}

BAD_X = {
    "nan": (np.full((3, 4), np.nan), "Input X contains NaN"),
    "inf": (np.full((3, 4), np.inf), "Input X contains infinity"),
    "beyond-float32": (np.full((3, 4), 1e39), r"beyond the float32 range"),
    "wrong-features": (np.ones((3, 5)), "X has 5 features"),
    "empty": (np.ones((0, 4)), r"0 sample\(s\)"),
    "1-d": (np.ones(4), "Expected 2D array"),
    "3-d": (np.ones((3, 4, 1)), "Found array with dim 3"),
    "strings": (np.full((3, 4), "a"), "could not convert string to float|arrays of bytes/strings"),
    "complex": (np.ones((3, 4)) + 1j, "Complex data not supported"),
}


def _skip_bad_x(name, method, case):
    if case == "wrong-features" and method.startswith("fit"):
        return True  # refitting on other features is valid
    return name in ("FrozenBackboneTransformer", "StreamingPipeline") and case in (
        "3-d",  # a stack of grayscale images for an encoder
        "beyond-float32",  # what the encoder makes of it is the encoder's business
    )


BAD_X_CASES = [
    (name, method, case)
    for name, methods in CALLS.items()
    for method in methods
    for case in BAD_X
    if not _skip_bad_x(name, method, case)
]


@pytest.mark.parametrize("name, method, case", BAD_X_CASES)
def test_bad_x_raises_a_clear_error_and_changes_nothing(fitted, name, method, case):
    estimator = copy.deepcopy(fitted[name])
    before = fingerprint(estimator)
    X_bad, message = BAD_X[case]
    with pytest.raises(ValueError, match=message):
        CALLS[name][method](estimator, X_bad, np.zeros(len(X_bad), dtype=int))
    assert fingerprint(estimator) == before


# ---------------------------------------------- labels, classes, weights

BAD_Y = {
    "mixed-types": (np.array([0, "a", 1], dtype=object), "labels of types int, str"),
    "none-label": (np.array([0, None, 1], dtype=object), "labels of types NoneType, int"),
    "continuous": (np.array([0.5, 1.5, 2.5]), "Unknown label type: continuous"),
    "nan": (np.array([0.0, np.nan, 1.0]), "Input y contains NaN"),
    "2-d": (np.zeros((3, 2)), "y should be a 1d array"),
    "wrong-length": (np.zeros(2), "inconsistent numbers of samples"),
}


@pytest.mark.parametrize("case", list(BAD_Y))
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_bad_labels_raise_a_clear_error_and_change_nothing(fitted, method, case):
    clf = copy.deepcopy(fitted["KeyValueBottleneckClassifier"])
    before = fingerprint(clf)
    y_bad, message = BAD_Y[case]
    with pytest.raises(ValueError, match=message):
        getattr(clf, method)(X_IRIS[:3], y_bad)
    assert fingerprint(clf) == before


@pytest.mark.parametrize(
    "classes, y, message",
    [
        ([0, 1, 2], ["0", "1", "2"], "classes holds number labels, but y holds string labels"),
        ([[0, 1, 2]], [0, 1, 2], r"classes must be a non-empty 1-D array.*shape \(1, 3\)"),
        ([], [0, 1, 2], r"classes must be a non-empty 1-D array.*shape \(0,\)"),
        (np.array([0, "a"], dtype=object), [0, 0, 0], "classes has labels of types int, str"),
        ([0, 1], [0, 1, 2], r"y contains labels \[2\] that are not in the classes"),
    ],
)
def test_bad_classes_on_the_first_call_leave_the_classifier_unfitted(classes, y, message):
    clf = tiny_sgd_classifier()
    before = fingerprint(clf)
    with pytest.raises(ValueError, match=message):
        clf.partial_fit(X_IRIS[:3], y, classes=classes)
    assert fingerprint(clf) == before and not hasattr(clf, "classes_")


@pytest.mark.parametrize(
    "sample_weight, message",
    [
        (np.array([1.0, -1.0, 1.0]), "Negative values in data passed to `sample_weight`"),
        (np.array([1.0, np.nan, 1.0]), "Input sample_weight contains NaN"),
        (np.ones(2), r"sample_weight.shape == \(2,\), expected \(3,\)"),
    ],
)
def test_bad_sample_weight_raises_and_changes_nothing(fitted, sample_weight, message):
    clf = copy.deepcopy(fitted["KeyValueBottleneckClassifier"])
    before = fingerprint(clf)
    with pytest.raises(ValueError, match=message):
        clf.partial_fit(X_IRIS[:3], Y_IRIS[:3], sample_weight=sample_weight)
    assert fingerprint(clf) == before


# ------------------------------------------- sparse, frames, dtypes, sizes


def sparse_data(seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(120, 10)) * (rng.uniform(size=(120, 10)) < 0.3)
    return X, rng.randint(0, 3, 120)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_sparse_x_gives_the_results_of_its_dense_twin(fmt, monkeypatch):
    X, y = sparse_data()
    X_sparse = {"csr": sp.csr_matrix, "csc": sp.csc_matrix, "coo": sp.coo_matrix}[fmt](X)
    monkeypatch.setattr(skkvb._encoding, "SPARSE_CHUNK_ROWS", 7)  # several chunks
    codebook = tiny_codebook().fit(X_sparse)
    np.testing.assert_array_equal(codebook.keys_, tiny_codebook().fit(X).keys_)
    np.testing.assert_array_equal(codebook.transform(X_sparse), codebook.transform(X))

    dense = tiny_sgd_classifier(partial_fit_max_iter=3).fit(X, y)
    sparse = tiny_sgd_classifier(partial_fit_max_iter=3).fit(X_sparse, y)
    np.testing.assert_array_equal(sparse.predict_proba(X_sparse), dense.predict_proba(X))
    dense.partial_fit(X[:50], y[:50])
    sparse.partial_fit(X_sparse.tocsr()[:50], y[:50])
    np.testing.assert_array_equal(sparse.values_, dense.values_)


def test_sparse_x_is_refused_clearly_by_the_encoder_step(fitted):
    backbone = copy.deepcopy(fitted["FrozenBackboneTransformer"])
    before = fingerprint(backbone)
    for call in (backbone.fit, backbone.transform):
        with pytest.raises(TypeError, match="Sparse data was passed for X, but dense data"):
            call(sp.csr_matrix(X_IRIS))
    assert fingerprint(backbone) == before


@pytest.mark.parametrize(
    "name", ["KeyCodebook", "KeyValueBottleneckClassifier", "FrozenBackboneTransformer"]
)
def test_dataframe_feature_names_are_checked(name):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X_IRIS, columns=["sepal_l", "sepal_w", "petal_l", "petal_w"])
    estimator = {
        "KeyCodebook": tiny_codebook(),
        "KeyValueBottleneckClassifier": tiny_sgd_classifier(),
        "FrozenBackboneTransformer": FrozenBackboneTransformer(ShapeAgnostic(), device="cpu"),
    }[name]
    estimator.fit(frame, Y_IRIS)
    assert estimator.feature_names_in_.tolist() == list(frame.columns)
    out = estimator.predict_proba if hasattr(estimator, "predict_proba") else estimator.transform
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a read-only (copy-on-write) frame warns nothing
        expected = out(frame)
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        np.testing.assert_array_equal(out(X_IRIS), expected)

    before = fingerprint(estimator)
    renamed = frame.rename(columns={"petal_w": "petal_width"})
    reordered = frame[frame.columns[::-1]]
    calls = [out]
    if hasattr(estimator, "partial_fit"):
        calls.append(lambda X: estimator.partial_fit(X, Y_IRIS))
    for call in calls:
        for bad in (renamed, reordered):
            with pytest.raises(ValueError, match="feature names should match those that were"):
                call(bad)
    assert fingerprint(estimator) == before


def test_float16_float32_float64_int_and_object_inputs_agree():
    X, _ = load_digits(return_X_y=True)  # integer pixels 0..16, exact in every dtype
    X, y = X[:400], _[:400]
    dtypes = [np.float16, np.float32, np.float64, np.int64, np.uint8, object]
    codebooks = [tiny_codebook(n_codebooks=8, n_keys=16).fit(X.astype(t)) for t in dtypes]
    classifiers = [tiny_sgd_classifier().fit(X.astype(t), y) for t in dtypes]
    for codebook, clf, dtype in zip(codebooks, classifiers, dtypes):
        np.testing.assert_array_equal(codebook.keys_, codebooks[0].keys_, err_msg=str(dtype))
        np.testing.assert_array_equal(
            codebook.transform(X.astype(dtype)), codebooks[0].transform(X), err_msg=str(dtype)
        )
        np.testing.assert_array_equal(
            clf.predict_proba(X.astype(dtype)), classifiers[0].predict_proba(X), err_msg=str(dtype)
        )


def test_one_sample_at_a_time_and_one_sample_codebooks():
    codebook = tiny_codebook().fit(X_IRIS[:1])
    heads = (X_IRIS[:1].astype(np.float32) @ codebook.projection_).reshape(4, 2)
    expected = np.broadcast_to(heads[:, None], (4, 8, 2))
    np.testing.assert_allclose(codebook.keys_, expected, rtol=1e-5)
    assert codebook.transform(X_IRIS[:1]).shape == (1, 4)

    stream = tiny_sgd_classifier()
    for i in [0, 50, 100, 1, 51, 101]:  # one sample per call, classes growing
        stream.partial_fit(X_IRIS[i : i + 1], Y_IRIS[i : i + 1])
    assert stream.classes_.tolist() == [0, 1, 2] and stream.t_ == 6
    assert stream.predict_proba(X_IRIS[:1]).shape == (1, 3)


def test_single_sample_and_single_class_fit():
    clf = KeyValueBottleneckClassifier(codebook=small_codebook()).fit(X_IRIS[:1], Y_IRIS[:1])
    np.testing.assert_array_equal(clf.predict(X_IRIS[:5]), [0] * 5)
    np.testing.assert_allclose(clf.predict_proba(X_IRIS[:5]), 1.0)


# -------------------------------------------------------- hyperparameters

BAD_PARAMS = [
    ("KeyCodebook", dict(n_codebooks=-1)),
    ("KeyCodebook", dict(n_keys=0)),
    ("KeyCodebook", dict(key_dim=2.5)),
    ("KeyCodebook", dict(projection="pca")),
    ("KeyCodebook", dict(decay=1.0)),
    ("KeyCodebook", dict(decay=-0.1)),
    ("KeyCodebook", dict(max_iter=0)),
    ("KeyCodebook", dict(batch_size=-5)),
    ("KeyCodebook", dict(dead_key_threshold=-0.1)),
    ("KeyCodebook", dict(device="tpu")),
    ("KeyCodebook", dict(random_state=-1)),
    ("KeyValueBottleneckClassifier", dict(codebook="kmeans")),
    ("KeyValueBottleneckClassifier", dict(learning_rate=-1.0)),
    ("KeyValueBottleneckClassifier", dict(learning_rate="fast")),
    ("KeyValueBottleneckClassifier", dict(learning_rate=np.inf)),
    ("KeyValueBottleneckClassifier", dict(max_iter=2.5)),
    ("KeyValueBottleneckClassifier", dict(batch_size=-1)),
    ("KeyValueBottleneckClassifier", dict(label_smoothing=1.0)),
    ("KeyValueBottleneckClassifier", dict(partial_fit_max_iter=-3)),
    ("KeyValueBottleneckClassifier", dict(mask_unused_keys="yes")),
    ("KeyValueBottleneckClassifier", dict(device="tpu")),
    ("KeyValueBottleneckClassifier", dict(verbose=-1)),
    ("KeyValueBottleneckClassifier", dict(random_state="seed")),
    ("KeyValueBottleneckClassifier", dict(value_update="adam")),
    ("KeyValueBottleneckClassifier", dict(value_update=None)),
    ("KeyValueBottleneckClassifier", dict(count_smoothing=0.0)),
    ("KeyValueBottleneckClassifier", dict(count_smoothing=-1)),
    ("KeyValueBottleneckClassifier", dict(count_smoothing=np.inf)),
    ("KeyValueBottleneckClassifier", dict(count_smoothing=np.nan)),
    ("KeyValueBottleneckClassifier", dict(count_smoothing="one")),
    ("FrozenBackboneTransformer", dict(batch_size=-1)),
    ("FrozenBackboneTransformer", dict(batch_size=1.5)),
    ("FrozenBackboneTransformer", dict(verbose=-1)),
]


@pytest.mark.parametrize(
    "name, params",
    BAD_PARAMS,
    ids=[f"{name}-{key}={value!r}" for name, p in BAD_PARAMS for key, value in p.items()],
)
def test_bad_hyperparameters_fail_fit_and_partial_fit_and_change_nothing(fitted, name, params):
    """sklearn's InvalidParameterError, naming the parameter, and no change."""
    estimator = copy.deepcopy(fitted[name]).set_params(**params)
    before = fingerprint(estimator)
    (key,) = params
    message = rf"The '{key}' parameter (of {name} )?must be"
    calls = [lambda: estimator.fit(X_IRIS, Y_IRIS)]
    # A later partial_fit goes on with the random state of the first call.
    if hasattr(estimator, "partial_fit") and "random_state" not in params:
        calls.append(lambda: estimator.partial_fit(X_IRIS, Y_IRIS))
    for call in calls:
        with pytest.raises(InvalidParameterError, match=message):
            call()
        assert fingerprint(estimator) == before


def test_a_bad_parameter_set_after_fit_fails_prediction_too():
    """Parameters read at prediction are checked there as well."""
    clf = tiny_sgd_classifier(value_update="count").fit(X_IRIS, Y_IRIS)
    clf.set_params(count_smoothing=np.nan)
    with pytest.raises(InvalidParameterError, match="The 'count_smoothing' parameter"):
        clf.predict_proba(X_IRIS)


def test_partition_projection_needs_a_feature_per_codebook():
    with pytest.raises(ValueError, match="needs at least one feature per codebook"):
        KeyCodebook(n_codebooks=5, projection="partition").fit(X_IRIS)


def test_codebook_fitted_on_other_features_is_rejected():
    codebook = FrozenEstimator(small_codebook().fit(X_IRIS[:, :3]))
    with pytest.raises(ValueError, match="codebook was fitted on 3 features"):
        KeyValueBottleneckClassifier(codebook=codebook).fit(X_IRIS, Y_IRIS)
