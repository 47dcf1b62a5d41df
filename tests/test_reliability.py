"""Reliability of every public estimator: bad input, all-or-nothing calls,
bounded memory, persistence, determinism and interruption.

test_classifier.py covers the classifier's NaN/inf/shape errors on partial_fit
and prediction, unseen labels with fixed classes, single-sample fits and the
basic pickle round trip; this module covers the rest.
"""

import ast
import copy
import io
import json
import os
import pathlib
import pickle
import signal
import subprocess
import sys
import warnings

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator
from sklearn.datasets import load_digits, load_iris
from sklearn.utils._param_validation import InvalidParameterError
from test_backbone import ShapeAgnostic
from torch import nn

import skkvb
import skkvb._classifier
import skkvb._device
import skkvb._encoding
import skkvb._key_codebook
import skkvb._persistence
import skkvb.engine.values.sgd
from skkvb.engine.values import ValueModel
from skkvb import (
    FrozenBackboneTransformer,
    KeyCodebook,
    KeyValueBottleneckClassifier,
    make_streaming_pipeline,
)

X_IRIS, Y_IRIS = load_iris(return_X_y=True)
TESTS = pathlib.Path(__file__).parent


def small_codebook(**params):
    return KeyCodebook(**{"n_codebooks": 4, "n_keys": 8, "key_dim": 2, "random_state": 0, **params})


def small_classifier(**params):
    """The paper's SGD values: the path with epochs to interrupt and steps to
    count (counting values have their own reliability tests in
    test_count_values.py)."""
    return KeyValueBottleneckClassifier(
        **{"codebook": small_codebook(), "random_state": 0, "value_update": "sgd", **params}
    )


def _canonical(value):
    if isinstance(value, torch.Tensor):
        return ("tensor", str(value.dtype), str(value.device), value.detach().cpu().numpy())
    if isinstance(value, np.random.RandomState):
        return ("random state", value.get_state())
    if isinstance(value, nn.Module):
        return ("module", repr(value), _canonical(dict(value.state_dict())))
    if isinstance(value, (BaseEstimator, ValueModel)):
        return (type(value).__name__, _canonical(vars(value)))
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(item) for item in value]
    return value


def fingerprint(estimator):
    """Digest of ALL state: every attribute, private ones, nested estimators,
    tensors and random states included, by value."""
    return joblib.hash(_canonical(vars(estimator)))


@pytest.fixture(scope="module")
def fitted():
    """One fitted instance of each public estimator; tests work on deep copies."""
    pipeline = make_streaming_pipeline(
        FrozenBackboneTransformer(ShapeAgnostic(), device="cpu"), small_classifier()
    )
    return {
        "KeyCodebook": small_codebook().fit(X_IRIS),
        "KeyValueBottleneckClassifier": small_classifier().fit(X_IRIS, Y_IRIS),
        "FrozenBackboneTransformer": FrozenBackboneTransformer(ShapeAgnostic(), device="cpu").fit(
            X_IRIS
        ),
        "StreamingPipeline": pipeline.partial_fit(X_IRIS, Y_IRIS),
    }


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
    if name in ("FrozenBackboneTransformer", "StreamingPipeline") and case in (
        "3-d",  # a stack of grayscale images for an encoder
        "beyond-float32",  # what the encoder makes of it is the encoder's business
    ):
        return True
    covered = ("partial_fit", "predict", "predict_proba", "decision_function")
    return (  # in test_classifier.py
        name == "KeyValueBottleneckClassifier"
        and method in covered
        and case in ("nan", "inf", "wrong-features", "empty", "1-d", "3-d")
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


def test_labels_keep_their_type_across_partial_fit_calls(fitted):
    numbers = copy.deepcopy(fitted["KeyValueBottleneckClassifier"])
    before = fingerprint(numbers)
    message = "y holds string labels, but the classes seen so far are numbers"
    with pytest.raises(ValueError, match=message):
        numbers.partial_fit(X_IRIS[:3], ["0", "1", "2"])
    assert fingerprint(numbers) == before

    strings = small_classifier().partial_fit(X_IRIS, np.array(["a", "b", "c"])[Y_IRIS])
    before = fingerprint(strings)
    message = "y holds number labels, but the classes seen so far are strings"
    with pytest.raises(ValueError, match=message):
        strings.partial_fit(X_IRIS[:3], [0, 1, 2])
    assert fingerprint(strings) == before
    strings.partial_fit(X_IRIS[:3], ["a", "d", "d"])  # a new string class is fine
    assert strings.classes_.tolist() == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    "classes, y, message",
    [
        ([0, 1, 2], ["0", "1", "2"], "classes holds number labels, but y holds string labels"),
        ([[0, 1, 2]], [0, 1, 2], r"classes must be a non-empty 1-D array.*shape \(1, 3\)"),
        ([], [0, 1, 2], r"classes must be a non-empty 1-D array.*shape \(0,\)"),
        (np.array([0, "a"], dtype=object), [0, 0, 0], "classes has labels of types int, str"),
    ],
)
def test_bad_classes_on_the_first_call_leave_the_classifier_unfitted(classes, y, message):
    clf = small_classifier()
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


# ------------------------------------------------------ sparse, frames, dtypes


def sparse_data(seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(120, 10)) * (rng.uniform(size=(120, 10)) < 0.3)
    return X, rng.randint(0, 3, 120)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_sparse_x_gives_the_results_of_its_dense_twin(fmt, monkeypatch):
    X, y = sparse_data()
    X_sparse = {"csr": sp.csr_matrix, "csc": sp.csc_matrix, "coo": sp.coo_matrix}[fmt](X)
    monkeypatch.setattr(skkvb._encoding, "SPARSE_CHUNK_ROWS", 7)  # several chunks
    codebook = small_codebook().fit(X_sparse)
    np.testing.assert_array_equal(codebook.keys_, small_codebook().fit(X).keys_)
    np.testing.assert_array_equal(codebook.transform(X_sparse), codebook.transform(X))

    dense = small_classifier(partial_fit_max_iter=3).fit(X, y)
    sparse = small_classifier(partial_fit_max_iter=3).fit(X_sparse, y)
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
        "KeyCodebook": small_codebook(),
        "KeyValueBottleneckClassifier": small_classifier(),
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
    codebooks = [small_codebook(n_codebooks=8, n_keys=16).fit(X.astype(t)) for t in dtypes]
    classifiers = [small_classifier().fit(X.astype(t), y) for t in dtypes]
    for codebook, clf, dtype in zip(codebooks, classifiers, dtypes):
        np.testing.assert_array_equal(codebook.keys_, codebooks[0].keys_, err_msg=str(dtype))
        np.testing.assert_array_equal(
            codebook.transform(X.astype(dtype)), codebooks[0].transform(X), err_msg=str(dtype)
        )
        np.testing.assert_array_equal(
            clf.predict_proba(X.astype(dtype)), classifiers[0].predict_proba(X), err_msg=str(dtype)
        )


def test_one_sample_at_a_time_and_one_sample_codebooks():
    codebook = small_codebook().fit(X_IRIS[:1])
    heads = (X_IRIS[:1].astype(np.float32) @ codebook.projection_).reshape(4, 2)
    expected = np.broadcast_to(heads[:, None], (4, 8, 2))
    np.testing.assert_allclose(codebook.keys_, expected, rtol=1e-5)
    assert codebook.transform(X_IRIS[:1]).shape == (1, 4)

    stream = small_classifier()
    for i in [0, 50, 100, 1, 51, 101]:  # one sample per call, classes growing
        stream.partial_fit(X_IRIS[i : i + 1], Y_IRIS[i : i + 1])
    assert stream.classes_.tolist() == [0, 1, 2] and stream.t_ == 6
    assert stream.predict_proba(X_IRIS[:1]).shape == (1, 3)


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


def test_a_bad_parameter_set_after_fit_fails_prediction_too(fitted):
    """Parameters read at prediction are checked there as well."""
    clf = small_classifier(value_update="count").fit(X_IRIS, Y_IRIS)
    clf.set_params(count_smoothing=np.nan)
    with pytest.raises(InvalidParameterError, match="The 'count_smoothing' parameter"):
        clf.predict_proba(X_IRIS)


def test_partition_projection_needs_a_feature_per_codebook():
    with pytest.raises(ValueError, match="needs at least one feature per codebook"):
        KeyCodebook(n_codebooks=5, projection="partition").fit(X_IRIS)


def test_a_failed_refit_keeps_the_previous_model_whole(fitted):
    """Checks that run after validation (here: the partition projection needs a
    feature per codebook) must not leave n_features_in_ or feature names of the
    new X on the old model."""
    pd = pytest.importorskip("pandas")
    clf = copy.deepcopy(fitted["KeyValueBottleneckClassifier"])
    clf.set_params(codebook=small_codebook(n_codebooks=4, projection="partition"))
    before = fingerprint(clf)
    narrow = pd.DataFrame(X_IRIS[:, :2], columns=["a", "b"])
    with pytest.raises(ValueError, match="needs at least one feature per codebook"):
        clf.fit(narrow, Y_IRIS)
    assert fingerprint(clf) == before
    assert clf.n_features_in_ == 4 and not hasattr(clf, "feature_names_in_")
    assert clf.predict(X_IRIS).shape == (150,)


# ------------------------------------------------------------------ memory

MEMORY_SCRIPT = r"""
import json, sys
import numpy as np, torch
torch.set_num_threads(1)
from sklearn.frozen import FrozenEstimator
from skkvb import KeyCodebook, KeyValueBottleneckClassifier

C, K, N, D = 8, 4096, 32768, 32
rng = np.random.RandomState(0)
sample = rng.normal(size=(1024, D)).astype(np.float32)
codebook = KeyCodebook(n_codebooks=C, n_keys=K, key_dim=4, max_iter=1, random_state=0).fit(sample)
clf = KeyValueBottleneckClassifier(codebook=FrozenEstimator(codebook), max_iter=1, random_state=0)
clf.fit(sample, rng.randint(0, 10, 1024))
X = rng.normal(size=(N, D)).astype(np.float32)
y = rng.randint(0, 10, N)

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))

growth = {}
for name, call in [
    ("KeyCodebook.transform", lambda: codebook.transform(X)),
    ("predict_proba", lambda: clf.predict_proba(X)),
    ("partial_fit", lambda: clf.partial_fit(X, y)),
]:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set size (VmHWM) to the current one
    base = status("VmRSS:")
    call()
    growth[name] = (status("VmHWM:") - base) / 1024
print(json.dumps({"unchunked_mib": C * N * K * 4 / 2**20, "growth_mib": growth}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_encoding_and_predicting_a_large_x_runs_in_bounded_memory():
    """32,768 samples x 8 codebooks x 4,096 keys: the (C, N, K) float32 distances
    would take 4 GiB; the chunked search must stay within a few dozen MiB."""
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["unchunked_mib"] == 4096
    for name, mib in figures["growth_mib"].items():
        assert mib < 64, f"{name} grew the peak resident memory by {mib:.0f} MiB"


# ------------------------------------------------------------- persistence


def _round_trip(estimator, how):
    if how == "pickle":
        return pickle.loads(pickle.dumps(estimator))
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    buffer.seek(0)
    return joblib.load(buffer)


@pytest.mark.parametrize("how", ["pickle", "joblib"])
@pytest.mark.parametrize("name", list(CALLS))
def test_round_trip_restores_all_state(fitted, name, how):
    estimator = fitted[name]
    loaded = _round_trip(estimator, how)
    assert fingerprint(loaded) == fingerprint(estimator)


@pytest.mark.parametrize("how", ["pickle", "joblib"])
def test_codebook_round_trip_transforms_the_same_and_keeps_fitting(fitted, how):
    codebook = copy.deepcopy(fitted["KeyCodebook"])
    loaded = _round_trip(codebook, how)
    np.testing.assert_array_equal(loaded.transform(X_IRIS), codebook.transform(X_IRIS))
    codebook.partial_fit(X_IRIS[::-1])
    loaded.partial_fit(X_IRIS[::-1])
    np.testing.assert_array_equal(loaded.keys_, codebook.keys_)
    assert fingerprint(loaded) == fingerprint(codebook)


def test_gpu_pickle_loads_on_a_cpu_only_machine_and_keeps_training(fitted, monkeypatch):
    clf = copy.deepcopy(fitted["KeyValueBottleneckClassifier"])
    to_cpu = skkvb._device.state_to_cpu

    def as_if_saved_on_a_gpu(state):
        state = to_cpu(state)
        state["_saved_device"] = "cuda:0"
        return state

    with monkeypatch.context() as patch:
        patch.setattr(skkvb._device, "state_to_cpu", as_if_saved_on_a_gpu)
        dumped = pickle.dumps(clf)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="saved on cuda:0, which is not available here"):
        loaded = pickle.loads(dumped)
    assert loaded._value_model.device.type == "cpu"
    np.testing.assert_array_equal(loaded.predict_proba(X_IRIS), clf.predict_proba(X_IRIS))
    loaded.partial_fit(X_IRIS[::3], Y_IRIS[::3])
    clf.partial_fit(X_IRIS[::3], Y_IRIS[::3])
    np.testing.assert_array_equal(loaded.values_, clf.values_)

    # A model that asks for device="cuda" where there is none says so and
    # carries on on the CPU.
    explicit = pickle.loads(pickle.dumps(clf.set_params(device="cuda")))
    with pytest.warns(UserWarning, match="device='cuda' was requested but is not available"):
        explicit.fit(X_IRIS, Y_IRIS)
    assert explicit._value_model.device.type == "cpu"
    np.testing.assert_array_equal(
        explicit.predict(X_IRIS), clf.set_params(device="cpu").fit(X_IRIS, Y_IRIS).predict(X_IRIS)
    )


def test_gpu_pickle_of_the_encoder_step_loads_on_a_cpu_only_machine(fitted, monkeypatch):
    backbone = copy.deepcopy(fitted["FrozenBackboneTransformer"])
    state = backbone.__getstate__()
    state["device_"] = torch.device("cuda", 0)  # as written on a GPU machine
    state["_saved_device"] = "cuda:0"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded = FrozenBackboneTransformer.__new__(FrozenBackboneTransformer)
    with pytest.warns(UserWarning, match="saved on cuda:0, which is not available here"):
        loaded.__setstate__(pickle.loads(pickle.dumps(state)))
    assert loaded.device_ == torch.device("cpu")
    np.testing.assert_array_equal(loaded.transform(X_IRIS), backbone.transform(X_IRIS))


@pytest.mark.parametrize(
    "name", ["KeyCodebook", "KeyValueBottleneckClassifier", "FrozenBackboneTransformer"]
)
def test_pickles_carry_a_state_format_and_refuse_another(fitted, name, monkeypatch):
    estimator = fitted[name]
    state = estimator.__getstate__()
    assert state["_skkvb_state_format"] == skkvb._persistence.STATE_FORMAT == 2
    assert "_skkvb_state_format" not in vars(pickle.loads(pickle.dumps(estimator)))

    monkeypatch.setattr(skkvb._persistence, "STATE_FORMAT", 3)  # a future skkvb
    from_the_future = pickle.dumps(estimator)
    monkeypatch.undo()
    # (a nested estimator, unpickled first, may be the one to report it)
    message = r"This \w+ was pickled by skkvb .* in state format 3, but skkvb .* reads format 2"
    with pytest.raises(ValueError, match=message):
        pickle.loads(from_the_future)

    # State pickled before the tag existed has format 1 (an older layout): refused too.
    untagged = {k: v for k, v in state.items() if not k.startswith("_skkvb_")}
    loaded = type(estimator).__new__(type(estimator))
    with pytest.raises(ValueError, match=r"in state format 1, but skkvb .* reads format 2"):
        loaded.__setstate__(untagged)


def test_every_torch_load_in_the_package_is_weights_only():
    calls = []
    for path in pathlib.Path(skkvb.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                calls.append((path.name, keywords.get("weights_only")))
    assert calls, "the encoder loads weights files with torch.load"
    assert all(flag == "True" for _, flag in calls), calls


class _Payload:
    """Unpickling this runs code: what weights_only=True must refuse."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_a_weights_file_with_code_in_it_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "weights.pt"
    torch.save({"weight": _Payload(marker)}, path)
    backbone = FrozenBackboneTransformer(nn.Linear(4, 3), weights=str(path), device="cpu")
    with pytest.raises(ValueError, match="is not a state_dict file torch.load can read"):
        backbone.fit(X_IRIS)
    assert not marker.exists()


# -------------------------------------------------------------- determinism


def model_digest(seed):
    """Digests of keys, codes, values and predictions of a fit and a stream."""
    X, y = load_digits(return_X_y=True)
    X, y = X[:600], y[:600]

    def codebook():
        return KeyCodebook(n_codebooks=16, n_keys=64, key_dim=4, max_iter=2)

    clf = KeyValueBottleneckClassifier(codebook=codebook(), max_iter=5, random_state=seed)
    clf.fit(X, y)
    stream = KeyValueBottleneckClassifier(
        codebook=codebook(), partial_fit_max_iter=3, random_state=seed
    )
    for phase in ([0, 1, 2], [3, 4, 5], [6, 7, 8, 9]):
        stream.partial_fit(X[np.isin(y, phase)], y[np.isin(y, phase)])
    return {
        "keys": joblib.hash(clf.codebook_.keys_),
        "codes": joblib.hash(clf.codebook_.transform(X)),
        "values": joblib.hash(clf.values_),
        "proba": joblib.hash(clf.predict_proba(X)),
        "stream keys": joblib.hash(stream.codebook_.keys_),
        "stream proba": joblib.hash(stream.predict_proba(X)),
    }


def test_same_seed_is_bit_identical_across_processes_and_other_seeds_differ():
    here = model_digest(0)
    assert model_digest(0) == here
    script = (
        "import json, torch; torch.set_num_threads(1)\n"
        "from test_reliability import model_digest\n"
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


# ------------------------------------------------------------- interruption


class InterruptAt:
    """Wraps ``function``; its ``at``-th call is interrupted by SIGINT (as Ctrl-C
    would) or by raising KeyboardInterrupt."""

    def __init__(self, function, at, by_signal=False):
        self.function, self.at, self.by_signal, self.calls = function, at, by_signal, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.at:
            if self.by_signal:
                signal.raise_signal(signal.SIGINT)
            raise KeyboardInterrupt
        return self.function(*args, **kwargs)


def _stream_after_first_phase():
    clf = small_classifier(batch_size=16, partial_fit_max_iter=3)
    return clf.partial_fit(X_IRIS[Y_IRIS < 2], Y_IRIS[Y_IRIS < 2])


def _unfitted_stream():
    return small_classifier(batch_size=16, partial_fit_max_iter=3)


def _first_two_classes(clf):
    return clf.partial_fit(X_IRIS[:100], Y_IRIS[:100])


# 100 samples / batch 16 = 7 SGD steps an epoch: step 10 is inside epoch 2.
INTERRUPTED_CALLS = {
    "partial_fit, known classes": (_stream_after_first_phase, _first_two_classes),
    "partial_fit, a new class": (
        _stream_after_first_phase,
        lambda clf: clf.partial_fit(X_IRIS[50:], Y_IRIS[50:]),
    ),
    "first partial_fit": (_unfitted_stream, _first_two_classes),
    "fit of a fitted model": (
        _stream_after_first_phase,
        lambda clf: clf.fit(X_IRIS[:100], Y_IRIS[:100]),
    ),
}


@pytest.mark.parametrize("by_signal", [False, True], ids=["raised", "sigint"])
@pytest.mark.parametrize("case", list(INTERRUPTED_CALLS))
def test_interrupted_training_leaves_the_classifier_as_it_was(case, by_signal, monkeypatch):
    make, call = INTERRUPTED_CALLS[case]
    clf, twin = make(), make()
    before = fingerprint(clf)
    interrupt = InterruptAt(skkvb.engine.values.sgd.sgd_step, at=10, by_signal=by_signal)
    monkeypatch.setattr(skkvb.engine.values.sgd, "sgd_step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        call(clf)
    assert interrupt.calls == 10, "interrupted in the middle of the second epoch"
    assert fingerprint(clf) == before
    monkeypatch.undo()
    # Still usable: the same call now gives exactly what it gives uninterrupted.
    call(clf)
    call(twin)
    assert fingerprint(clf) == fingerprint(twin)


@pytest.mark.parametrize(
    "name, call",
    [
        ("KeyCodebook", lambda est: est.fit(X_IRIS)),
        ("KeyCodebook", lambda est: est.partial_fit(X_IRIS)),
        # interrupted inside the fit of its codebook
        ("KeyValueBottleneckClassifier", lambda est: est.fit(X_IRIS, Y_IRIS)),
    ],
    ids=["codebook.fit", "codebook.partial_fit", "classifier.fit"],
)
def test_interrupted_key_fitting_leaves_the_estimator_as_it_was(fitted, name, call, monkeypatch):
    estimator = copy.deepcopy(fitted[name]).set_params(**{"batch_size": 32})
    twin = copy.deepcopy(estimator)
    before = fingerprint(estimator)
    interrupt = InterruptAt(skkvb._key_codebook.ema_update, at=3)
    monkeypatch.setattr(skkvb._key_codebook, "ema_update", interrupt)
    with pytest.raises(KeyboardInterrupt):
        call(estimator)
    assert fingerprint(estimator) == before
    monkeypatch.undo()
    call(estimator)
    call(twin)
    assert fingerprint(estimator) == fingerprint(twin)
