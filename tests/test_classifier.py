"""KeyValueBottleneckClassifier's surface: defaults, outputs, the codebook it
reads with, and prediction in chunks of bounded memory.

What it learns is in test_classifier_values.py, label sets in
test_label_growth.py, inputs in test_validation.py, pickles and failures in
test_persistence.py.
"""

import json
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
import scipy.sparse as sp
from _helpers import X_IRIS, Y_IRIS, small_codebook
from _strategies import PROPERTY, data_arrays, draw_list, fitted_codebooks
from hypothesis import given
from hypothesis import strategies as st
from sklearn.datasets import make_blobs
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV

import skkvb._classifier
import skkvb._encoding
from skkvb import KeyCodebook, KeyValueBottleneckClassifier


def test_default_classifier_works_out_of_the_box():
    clf = KeyValueBottleneckClassifier(random_state=0).fit(X_IRIS, Y_IRIS)
    assert clf.codebook_.keys_.shape == (64, len(X_IRIS), 32)  # n_keys="auto": one per sample
    assert clf.score(X_IRIS, Y_IRIS) > 0.9


# ------------------------------------------------------------- outputs


@pytest.mark.parametrize("value_update", ["count", "sgd"])
def test_outputs_are_numpy_and_consistent(value_update):
    X, y = X_IRIS, Y_IRIS
    clf = KeyValueBottleneckClassifier(
        codebook=small_codebook(), value_update=value_update, random_state=0
    ).fit(X, y)
    proba = clf.predict_proba(X)
    assert isinstance(proba, np.ndarray) and proba.shape == (150, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.log(proba), clf.predict_log_proba(X), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[proba.argmax(1)])
    np.testing.assert_array_equal(clf.decision_function(X).argmax(1), proba.argmax(1))
    assert clf.values_.shape == (16, 32, 3)
    assert clf.key_usage_.sum() == 150 * 16
    if value_update == "sgd":
        assert clf.n_iter_ == clf.max_iter and clf.t_ == clf.max_iter  # one batch per epoch
    else:
        assert clf.n_iter_ == 1 and clf.t_ == 0  # one counting pass, no steps


def test_string_labels_and_binary_decision_function():
    X, y = make_blobs(n_samples=80, centers=2, random_state=0)
    labels = np.array(["cat", "dog"])[y]
    clf = KeyValueBottleneckClassifier(codebook=small_codebook(), random_state=0).fit(X, labels)
    assert set(clf.predict(X)) <= {"cat", "dog"}
    scores = clf.decision_function(X)
    assert scores.shape == (80,)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[(scores > 0).astype(int)])


@PROPERTY
@given(data=st.data())
def test_predictions_do_not_depend_on_batch_or_chunk_size(data):
    n_features = data.draw(st.integers(1, 6), label="n_features")
    X = data.draw(data_arrays(st.integers(2, 60), n_features), label="X")
    y = draw_list(data, st.integers(0, 3), len(X), "y")
    codebook = FrozenEstimator(data.draw(fitted_codebooks(n_features, X), label="codebook"))
    clf = KeyValueBottleneckClassifier(
        codebook=codebook,
        value_update="sgd",
        mask_unused_keys=data.draw(st.booleans(), label="mask"),
        max_iter=3,
        random_state=0,
    ).fit(X[::2], y[::2])
    whole = clf.predict_proba(X)

    cuts = sorted(data.draw(st.sets(st.integers(1, len(X) - 1), max_size=4), label="cuts"))
    pieces = [clf.predict_proba(part) for part in np.split(X, cuts)]
    np.testing.assert_array_equal(np.concatenate(pieces), whole)

    chunk_rows = data.draw(st.integers(1, len(X)), label="chunk_rows")
    with mock.patch.object(skkvb._classifier, "PREDICT_CHUNK_ROWS", chunk_rows), mock.patch.object(
        skkvb._encoding, "SPARSE_CHUNK_ROWS", chunk_rows
    ):
        np.testing.assert_array_equal(clf.predict_proba(X), whole)
        np.testing.assert_array_equal(clf.predict_proba(sp.csr_matrix(X)), whole)
    # Chunks cut down to the value-block budget (many classes): the same.
    with mock.patch.object(skkvb._classifier, "PREDICT_BLOCK_BYTES", 1), mock.patch.object(
        skkvb._classifier, "PREDICT_MIN_ROWS", chunk_rows
    ):
        np.testing.assert_array_equal(clf.predict_proba(X), whole)


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


# ------------------------------------------------------------- codebook


def test_keys_fitted_on_other_data_survive_clone_and_fit(digits_split):
    """The paper's protocol: keys from a different, unlabelled dataset."""
    X_train, X_test, y_train, y_test = digits_split
    other = np.random.RandomState(0).normal(size=(500, X_train.shape[1]))
    codebook = FrozenEstimator(small_codebook(n_codebooks=32, n_keys=64).fit(other))
    keys = codebook.keys_.copy()
    clf = KeyValueBottleneckClassifier(codebook=codebook, random_state=0).fit(X_train, y_train)
    np.testing.assert_array_equal(clf.codebook_.keys_, keys)
    clf.partial_fit(X_test, y_test)
    np.testing.assert_array_equal(clf.codebook_.keys_, keys)
    assert clf.score(X_test, y_test) > 0.5


def test_fit_refits_a_clone_of_an_unfrozen_codebook():
    codebook = small_codebook()
    clf = KeyValueBottleneckClassifier(codebook=codebook).fit(X_IRIS, Y_IRIS)
    assert not hasattr(codebook, "keys_"), "the parameter is never fitted in place"
    assert clf.codebook_ is not codebook and clf.codebook_.keys_.shape == (16, 32, 3)


def test_partial_fit_keeps_an_already_fitted_codebook_without_mutating_it():
    codebook = small_codebook().fit(X_IRIS[::2])
    keys = codebook.keys_.copy()
    clf = KeyValueBottleneckClassifier(codebook=codebook).partial_fit(X_IRIS, Y_IRIS)
    np.testing.assert_array_equal(clf.codebook_.keys_, keys)
    codebook.fit(X_IRIS[1::2])  # refitting the parameter later does not leak into clf
    np.testing.assert_array_equal(clf.codebook_.keys_, keys)


def test_grid_search_reaches_the_parameters_of_the_default_codebook():
    """codebook__<name> with codebook=None (issue 22.4 once raised AttributeError)."""
    search = GridSearchCV(
        KeyValueBottleneckClassifier(device="cpu", random_state=0),
        {"codebook__n_keys": [8, 16], "codebook__n_codebooks": [4], "codebook__key_dim": [2]},
        cv=2,
    ).fit(X_IRIS, Y_IRIS)
    best = search.best_estimator_.codebook
    assert isinstance(best, KeyCodebook) and best.n_codebooks == 4
    assert best.n_keys == search.best_params_["codebook__n_keys"] and best.device == "cpu"
    assert KeyValueBottleneckClassifier().get_params()["codebook"] is None


def test_a_cold_start_stream_reseeds_only_its_own_unused_keys():
    """Keys fitted by the classifier on its first batch move where later classes
    lie; keys carrying values and a codebook given fitted never move."""
    X, y = X_IRIS, Y_IRIS
    own = KeyValueBottleneckClassifier(codebook=small_codebook(), random_state=0)
    own.partial_fit(X[y == 0], y[y == 0])
    keys, used, counts = own.codebook_.keys_.copy(), own.key_usage_ > 0, own.class_counts_
    own.partial_fit(X[y == 1], y[y == 1])
    np.testing.assert_array_equal(own.codebook_.keys_[used], keys[used])
    assert not np.array_equal(own.codebook_.keys_[~used], keys[~used])
    np.testing.assert_array_equal(own.class_counts_[..., 0], counts[..., 0])

    given = small_codebook().fit(X[y == 0])
    frozen = KeyValueBottleneckClassifier(codebook=FrozenEstimator(given), random_state=0)
    frozen.partial_fit(X[y == 0], y[y == 0]).partial_fit(X[y == 1], y[y == 1])
    np.testing.assert_array_equal(frozen.codebook_.keys_, given.keys_)


def test_auto_keys_are_sized_by_fit_but_not_by_a_streams_first_batch():
    """n_keys="auto" caps keys at the samples in fit; a first partial_fit batch does
    not bound the stream, so it gets as many keys as KeyCodebook.partial_fit gives."""
    from sklearn.datasets import load_iris

    from skkvb._key_codebook import AUTO_MAX_KEYS

    X, y = load_iris(return_X_y=True)
    codebook = KeyCodebook(n_codebooks=2, key_dim=2, max_iter=1, random_state=0)
    fitted = KeyValueBottleneckClassifier(codebook=codebook, random_state=0).fit(X, y)
    assert fitted.codebook_.n_keys_ == len(X)
    streamed = KeyValueBottleneckClassifier(codebook=codebook, random_state=0)
    streamed.partial_fit(X[:60], y[:60], classes=[0, 1, 2])
    assert streamed.codebook_.n_keys_ == AUTO_MAX_KEYS
    assert codebook.n_keys == "auto"  # the user's codebook is left as it was
