"""Behaviour of KeyValueBottleneckClassifier and KeyCodebook."""

import io
import pickle

import joblib
import numpy as np
import pytest
import torch
from conftest import class_incremental
from sklearn.datasets import load_iris, make_blobs
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import SGDClassifier

from skkvb import KeyCodebook, KeyValueBottleneckClassifier


def small_codebook(**kwargs):
    params = dict(n_codebooks=16, n_keys=32, key_dim=3, random_state=0)
    params.update(kwargs)
    return KeyCodebook(**params)


def fingerprint(clf):
    """Everything a fitted classifier has learned, for exact before/after checks."""
    return pickle.dumps(
        (clf.values_, clf.key_usage_, clf.classes_, clf.t_, clf.n_iter_, clf.codebook_.keys_)
    )


@pytest.fixture(scope="module")
def digits_codebook(digits_split):
    """Keys fitted without labels on the training images, then frozen."""
    X_train = digits_split[0]
    codebook = KeyCodebook(n_codebooks=64, n_keys=128, key_dim=8, random_state=0)
    return FrozenEstimator(codebook.fit(X_train))


# ------------------------------------------------------------- accuracy


@pytest.mark.parametrize("classes_upfront", [True, False], ids=["classes-given", "classes-grow"])
def test_class_incremental_digits_matches_iid(digits_split, digits_codebook, classes_upfront):
    X_train, X_test, y_train, y_test = digits_split
    iid = KeyValueBottleneckClassifier(codebook=digits_codebook, max_iter=30, random_state=0)
    iid_accuracy = iid.fit(X_train, y_train).score(X_test, y_test)

    stream = KeyValueBottleneckClassifier(
        codebook=digits_codebook, partial_fit_max_iter=30, random_state=0
    )
    for X_phase, y_phase in class_incremental(X_train, y_train):
        stream.partial_fit(X_phase, y_phase, classes=np.arange(10) if classes_upfront else None)
    accuracy = stream.score(X_test, y_test)

    assert accuracy >= 0.93
    assert abs(accuracy - iid_accuracy) <= 0.02
    np.testing.assert_array_equal(stream.classes_, np.arange(10))


def test_sgd_linear_probe_forgets_in_the_same_stream(digits_split):
    X_train, X_test, y_train, y_test = digits_split
    probe = SGDClassifier(loss="log_loss", random_state=0)
    for X_phase, y_phase in class_incremental(X_train, y_train):
        for _ in range(30):
            probe.partial_fit(X_phase, y_phase, classes=np.arange(10))
    assert probe.score(X_test, y_test) < 0.5


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
    X, y = load_iris(return_X_y=True)
    codebook = small_codebook()
    clf = KeyValueBottleneckClassifier(codebook=codebook).fit(X, y)
    assert not hasattr(codebook, "keys_"), "the parameter is never fitted in place"
    assert clf.codebook_ is not codebook and clf.codebook_.keys_.shape == (16, 32, 3)


def test_partial_fit_keeps_an_already_fitted_codebook_without_mutating_it():
    X, y = load_iris(return_X_y=True)
    codebook = small_codebook().fit(X[::2])
    keys = codebook.keys_.copy()
    clf = KeyValueBottleneckClassifier(codebook=codebook).partial_fit(X, y)
    np.testing.assert_array_equal(clf.codebook_.keys_, keys)
    codebook.fit(X[1::2])  # refitting the parameter later does not leak into clf
    np.testing.assert_array_equal(clf.codebook_.keys_, keys)


def test_default_classifier_works_out_of_the_box():
    X, y = load_iris(return_X_y=True)
    clf = KeyValueBottleneckClassifier(random_state=0).fit(X, y)
    assert clf.codebook_.keys_.shape == (64, 4096, 32)
    assert clf.score(X, y) > 0.9


# ------------------------------------------------------------- outputs


@pytest.mark.parametrize("value_update", ["count", "sgd"])
def test_outputs_are_numpy_and_consistent(value_update):
    X, y = load_iris(return_X_y=True)
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


# ------------------------------------------------------- locality and classes


def test_partial_fit_touches_only_the_rows_its_samples_fetched():
    X, y = load_iris(return_X_y=True)
    clf = KeyValueBottleneckClassifier(codebook=small_codebook(), random_state=0)
    clf.partial_fit(X[y == 0], y[y == 0], classes=[0, 1, 2])
    before = clf.values_
    batch = y == 1
    clf.partial_fit(X[batch], y[batch])
    after = clf.values_
    fetched = np.zeros(before.shape[:2], dtype=bool)
    codes = clf.codebook_.transform(X[batch])
    fetched[np.arange(codes.shape[1]), codes] = True
    changed = (after != before).any(-1)
    assert changed.any()
    assert not (changed & ~fetched).any(), "a value row no sample fetched changed"
    np.testing.assert_array_equal(after[~fetched], before[~fetched])


def test_growing_label_set_keeps_old_values_and_inserts_in_sorted_order():
    X, y = load_iris(return_X_y=True)
    clf = KeyValueBottleneckClassifier(codebook=small_codebook(), value_update="sgd", random_state=0)
    clf.partial_fit(X[y == 2], y[y == 2])
    np.testing.assert_array_equal(clf.classes_, [2])
    old = clf.values_[..., 0].copy()
    codes = clf.codebook_.transform(X[y == 0])
    clf.partial_fit(X[y == 0], y[y == 0])
    np.testing.assert_array_equal(clf.classes_, [0, 2])
    fetched = np.zeros(old.shape, dtype=bool)
    fetched[np.arange(codes.shape[1]), codes] = True
    np.testing.assert_array_equal(clf.values_[..., 1][~fetched], old[~fetched])
    # A new class starts where a never-seen class stands under a fixed softmax:
    # below class 2 on the rows class 2 trained (it received its negative updates).
    trained = clf.key_usage_ > 0
    assert (clf.values_[..., 0][trained & ~fetched] < clf.values_[..., 1][trained & ~fetched]).all()
    assert clf.predict_proba(X).shape == (150, 2)


def test_unknown_label_with_fixed_classes_raises_and_changes_nothing():
    X, y = load_iris(return_X_y=True)
    clf = KeyValueBottleneckClassifier(codebook=small_codebook(), random_state=0)
    clf.partial_fit(X[y < 2], y[y < 2], classes=[0, 1])
    state = fingerprint(clf)
    with pytest.raises(ValueError, match=r"labels \[2\] that are not in the classes"):
        clf.partial_fit(X, y)
    assert fingerprint(clf) == state
    with pytest.raises(ValueError, match="classes may only be given on the first call"):
        clf.partial_fit(X[y < 2], y[y < 2], classes=[0, 1, 2])
    assert fingerprint(clf) == state


def test_first_partial_fit_with_unknown_label_leaves_estimator_unfitted():
    X, y = load_iris(return_X_y=True)
    clf = KeyValueBottleneckClassifier(codebook=small_codebook())
    with pytest.raises(ValueError, match="not in the classes"):
        clf.partial_fit(X, y, classes=[0, 1])
    assert not hasattr(clf, "classes_") and not hasattr(clf, "codebook_")


# ---------------------------------------------------------------- masking


def test_masking_snaps_heads_to_the_nearest_used_key():
    """One codebook of three keys on the raw 1-D input; only two are trained."""
    codebook = KeyCodebook(n_keys=3, projection="none").fit(np.zeros((3, 1)))
    codebook.keys_ = np.array([[[-10.0], [0.0], [10.0]]], dtype=np.float32)
    codebook = FrozenEstimator(codebook)
    X_train = np.array([[-10.0], [0.0]])
    y_train = np.array([0, 1])
    masked = KeyValueBottleneckClassifier(codebook=codebook, random_state=0).fit(X_train, y_train)
    unmasked = KeyValueBottleneckClassifier(
        codebook=codebook, mask_unused_keys=False, random_state=0
    ).fit(X_train, y_train)
    assert (masked.key_usage_ > 0).sum() == 2
    # 9.0 fetches the untrained key at 10 unless it is masked; then key 0.0 (class 1).
    assert masked.predict([[9.0]])[0] == 1
    np.testing.assert_allclose(unmasked.predict_proba([[9.0]]), [[0.5, 0.5]])


# ---------------------------------------------------------- sample weights


def test_sample_weight_scales_the_step_and_zero_weight_is_a_no_op():
    X, y = load_iris(return_X_y=True)
    codebook = FrozenEstimator(small_codebook().fit(X))
    base = dict(codebook=codebook, batch_size=256, random_state=0, value_update="sgd")
    doubled = KeyValueBottleneckClassifier(learning_rate=2.0, **base).partial_fit(X, y)
    weighted = KeyValueBottleneckClassifier(learning_rate=1.0, **base)
    weighted.partial_fit(X, y, sample_weight=np.full(150, 2.0))
    np.testing.assert_allclose(weighted.values_, doubled.values_, rtol=1e-5, atol=1e-7)

    # Rows fetched only by zero-weight samples do not move, nor count as used.
    fresh = KeyValueBottleneckClassifier(learning_rate=1.0, **base).partial_fit(X[y == 0], y[y == 0], classes=[0, 1, 2])
    before, usage = fresh.values_, fresh.key_usage_.copy()
    weights = np.where(y == 1, 0.0, 1.0)
    fresh.partial_fit(X[y > 0], y[y > 0], sample_weight=weights[y > 0])
    codes = fresh.codebook_.transform(X)
    only_zero_weight = np.zeros(usage.shape, dtype=bool)
    only_zero_weight[np.arange(16), codes[y == 1]] = True
    only_zero_weight[np.arange(16), codes[y != 1]] = False
    assert only_zero_weight.any()
    np.testing.assert_array_equal(fresh.values_[only_zero_weight], before[only_zero_weight])
    np.testing.assert_array_equal(fresh.key_usage_[only_zero_weight], usage[only_zero_weight])


# ------------------------------------------------ determinism and persistence


def test_same_random_state_gives_identical_models_and_other_seeds_differ():
    X, y = load_iris(return_X_y=True)

    def fitted(seed):
        return KeyValueBottleneckClassifier(
            codebook=KeyCodebook(n_codebooks=16, n_keys=32, key_dim=3), random_state=seed
        ).fit(X, y)

    a, b, c = fitted(0), fitted(0), fitted(1)
    np.testing.assert_array_equal(a.codebook_.keys_, b.codebook_.keys_)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert not np.array_equal(a.codebook_.keys_, c.codebook_.keys_)


@pytest.mark.parametrize("dump", ["pickle", "joblib"])
def test_round_trip_predicts_the_same_and_keeps_training(dump):
    X, y = load_iris(return_X_y=True)
    clf = KeyValueBottleneckClassifier(codebook=small_codebook(), random_state=0)
    clf.partial_fit(X[y < 2], y[y < 2])
    if dump == "pickle":
        loaded = pickle.loads(pickle.dumps(clf))
    else:
        buffer = io.BytesIO()
        joblib.dump(clf, buffer)
        buffer.seek(0)
        loaded = joblib.load(buffer)
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    clf.partial_fit(X[y == 2], y[y == 2])
    loaded.partial_fit(X[y == 2], y[y == 2])
    np.testing.assert_array_equal(loaded.values_, clf.values_)
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))


def test_state_saved_on_a_gpu_loads_on_a_cpu_only_machine(monkeypatch):
    X, y = load_iris(return_X_y=True)
    clf = KeyValueBottleneckClassifier(
        codebook=small_codebook(), value_update="sgd", random_state=0
    ).fit(X, y)
    state = clf.__getstate__()
    assert all(not isinstance(v, torch.Tensor) or v.device.type == "cpu" for v in state.values())
    state["_saved_device"] = "cuda:0"  # as written by a model trained on a GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded = KeyValueBottleneckClassifier.__new__(KeyValueBottleneckClassifier)
    with pytest.warns(UserWarning, match="saved on cuda:0, which is not available"):
        loaded.__setstate__(pickle.loads(pickle.dumps(state)))
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))


# -------------------------------------------------------------- bad input


BAD_X = {
    "nan": (np.full((3, 4), np.nan), "NaN"),
    "inf": (np.full((3, 4), np.inf), "infinity"),
    "wrong-features": (np.ones((3, 5)), "X has 5 features"),
    "empty": (np.ones((0, 4)), "0 sample"),
    "1-d": (np.ones(4), "Expected 2D array"),
    "3-d": (np.ones((3, 4, 1)), "dim 3"),
}


@pytest.mark.parametrize("case", list(BAD_X))
@pytest.mark.parametrize("method", ["partial_fit", "predict", "predict_proba", "decision_function"])
def test_bad_input_raises_clearly_and_leaves_the_model_unchanged(case, method):
    X, y = load_iris(return_X_y=True)
    clf = KeyValueBottleneckClassifier(
        codebook=small_codebook(), value_update="sgd", random_state=0
    ).fit(X, y)
    state = fingerprint(clf)
    X_bad, message = BAD_X[case]
    args = (X_bad, np.zeros(len(X_bad), dtype=int)) if method == "partial_fit" else (X_bad,)
    with pytest.raises(ValueError, match=message):
        getattr(clf, method)(*args)
    assert fingerprint(clf) == state


def test_single_sample_and_single_class_fit():
    X, y = load_iris(return_X_y=True)
    clf = KeyValueBottleneckClassifier(codebook=small_codebook()).fit(X[:1], y[:1])
    np.testing.assert_array_equal(clf.predict(X[:5]), [0] * 5)
    np.testing.assert_allclose(clf.predict_proba(X[:5]), 1.0)


def test_codebook_fitted_on_other_features_is_rejected():
    X, y = load_iris(return_X_y=True)
    codebook = FrozenEstimator(small_codebook().fit(X[:, :3]))
    with pytest.raises(ValueError, match="codebook was fitted on 3 features"):
        KeyValueBottleneckClassifier(codebook=codebook).fit(X, y)


def test_verbose_reports_each_epoch(capsys):
    X, y = load_iris(return_X_y=True)
    KeyValueBottleneckClassifier(
        codebook=small_codebook(), value_update="sgd", max_iter=3, verbose=1
    ).fit(X, y)
    out = capsys.readouterr().out
    assert out.count("-- Epoch") == 3 and "loss" in out


# ---------------------------------------------------------------- codebook


def test_codebook_partial_fit_continues_the_ema_stream():
    X, _ = load_iris(return_X_y=True)
    streamed = small_codebook(batch_size=50)
    for start in range(0, 150, 50):
        streamed.partial_fit(X[start : start + 50])
    assert streamed.n_steps_ == 3 and np.isfinite(streamed.keys_).all()
    whole = small_codebook(batch_size=50).partial_fit(X)
    # One pass over the same batches in the same order: the same keys.
    np.testing.assert_allclose(streamed.keys_, whole.keys_, rtol=1e-6)


def test_codebook_transform_gives_codes_of_the_nearest_keys():
    X, _ = load_iris(return_X_y=True)
    codebook = small_codebook().fit(X)
    codes = codebook.transform(X)
    heads = (X.astype(np.float32) @ codebook.projection_).reshape(150, 16, 3)
    distances = ((heads[:, :, None, :] - codebook.keys_[None]) ** 2).sum(-1)
    np.testing.assert_allclose(
        np.take_along_axis(distances, codes[..., None], -1)[..., 0], distances.min(-1), atol=1e-4
    )
    assert codebook.get_feature_names_out().tolist()[:2] == ["keycodebook0", "keycodebook1"]
