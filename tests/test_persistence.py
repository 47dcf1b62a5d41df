"""Fitted state that survives: pickle and joblib round trips, state format
tags, models saved on a GPU loaded on a CPU-only machine, and all-or-nothing
calls -- a fit or partial_fit that fails after validation or is interrupted
leaves the estimator exactly as it was.

Bad input, which also changes nothing, is in test_validation.py.
"""

import copy
import pickle
import signal

import numpy as np
import pytest
import torch
from _helpers import (
    X_IRIS,
    Y_IRIS,
    TinyConvNet,
    fingerprint,
    round_trip,
    small_codebook,
    tiny_codebook,
    tiny_sgd_classifier,
)
from sklearn.base import clone

import skkvb._device
import skkvb._key_codebook
import skkvb._persistence
import skkvb.engine.values.count
import skkvb.engine.values.sgd
from skkvb import FrozenBackboneTransformer, KeyCodebook, KeyValueBottleneckClassifier
from skkvb.engine.values import add_counts

PUBLIC_ESTIMATORS = [
    "KeyCodebook",
    "KeyValueBottleneckClassifier",
    "FrozenBackboneTransformer",
    "StreamingPipeline",
]

# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("how", ["pickle", "joblib"])
@pytest.mark.parametrize("name", PUBLIC_ESTIMATORS)
def test_round_trip_restores_all_state(fitted, name, how):
    estimator = fitted[name]
    loaded = round_trip(estimator, how)
    assert fingerprint(loaded) == fingerprint(estimator)


@pytest.mark.parametrize("how", ["pickle", "joblib"])
def test_codebook_round_trip_transforms_the_same_and_keeps_fitting(fitted, how):
    codebook = copy.deepcopy(fitted["KeyCodebook"])
    loaded = round_trip(codebook, how)
    np.testing.assert_array_equal(loaded.transform(X_IRIS), codebook.transform(X_IRIS))
    codebook.partial_fit(X_IRIS[::-1])
    loaded.partial_fit(X_IRIS[::-1])
    np.testing.assert_array_equal(loaded.keys_, codebook.keys_)
    assert fingerprint(loaded) == fingerprint(codebook)


@pytest.mark.parametrize("how", ["pickle", "joblib"])
@pytest.mark.parametrize("value_update", ["count", "sgd"])
def test_round_trip_predicts_the_same_and_keeps_training(value_update, how):
    clf = KeyValueBottleneckClassifier(
        codebook=small_codebook(), value_update=value_update, count_smoothing=0.3, random_state=0
    )
    clf.partial_fit(X_IRIS[Y_IRIS < 2], Y_IRIS[Y_IRIS < 2])
    loaded = round_trip(clf, how)
    assert loaded.get_params()["value_update"] == value_update
    np.testing.assert_array_equal(loaded.predict_proba(X_IRIS), clf.predict_proba(X_IRIS))
    clf.partial_fit(X_IRIS[Y_IRIS == 2], Y_IRIS[Y_IRIS == 2])  # a new class
    loaded.partial_fit(X_IRIS[Y_IRIS == 2], Y_IRIS[Y_IRIS == 2])
    assert fingerprint(loaded) == fingerprint(clf)
    np.testing.assert_array_equal(loaded.predict_proba(X_IRIS), clf.predict_proba(X_IRIS))


def test_backbone_round_trip_transforms_the_same(images):
    """With a named layer (a forward hook) and a module with parameters."""
    embedder = FrozenBackboneTransformer(TinyConvNet(), layer="features", device="cpu").fit(images)
    restored = pickle.loads(pickle.dumps(embedder))
    np.testing.assert_array_equal(restored.transform(images), embedder.transform(images))
    assert clone(embedder).get_params()["layer"] == "features"


# ---------------------------------------------------------------- devices


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


def test_backbone_gpu_pickle_loads_on_the_cpu_with_a_warning(images, monkeypatch):
    embedder = FrozenBackboneTransformer(TinyConvNet(), layer="features", device="cpu").fit(images)
    state = embedder.__getstate__()
    state.update(_saved_device="cuda:0", device_=torch.device("cuda", 0))  # as on a GPU machine
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded = FrozenBackboneTransformer.__new__(FrozenBackboneTransformer)
    with pytest.warns(UserWarning, match="saved on cuda:0, which is not available here"):
        loaded.__setstate__(pickle.loads(pickle.dumps(state)))
    assert loaded.device_ == torch.device("cpu")
    assert all(p.device.type == "cpu" for p in loaded.encoder_.parameters())
    np.testing.assert_array_equal(loaded.transform(images), embedder.transform(images))


# -------------------------------------------------------------- state format


@pytest.mark.parametrize(
    "name", ["KeyCodebook", "KeyValueBottleneckClassifier", "FrozenBackboneTransformer"]
)
def test_pickles_carry_a_state_format_and_refuse_another(fitted, name, monkeypatch):
    estimator = fitted[name]
    state = estimator.__getstate__()
    assert state["_skkvb_state_format"] == skkvb._persistence.STATE_FORMAT == 3
    assert "_skkvb_state_format" not in vars(pickle.loads(pickle.dumps(estimator)))

    monkeypatch.setattr(skkvb._persistence, "STATE_FORMAT", 4)  # a future skkvb
    from_the_future = pickle.dumps(estimator)
    monkeypatch.undo()
    # (a nested estimator, unpickled first, may be the one to report it)
    message = (
        r"This \w+ was pickled by skkvb .* in state format 4, but skkvb .* reads formats 2 to 3"
    )
    with pytest.raises(ValueError, match=message):
        pickle.loads(from_the_future)

    # State pickled before the tag existed has format 1 (an older layout): refused too.
    untagged = {k: v for k, v in state.items() if not k.startswith("_skkvb_")}
    loaded = type(estimator).__new__(type(estimator))
    with pytest.raises(ValueError, match=r"in state format 1, but .* reads formats 2 to 3"):
        loaded.__setstate__(untagged)


def test_format_2_codebooks_load_without_their_ema_sums_and_keep_fitting(fitted, monkeypatch):
    """Format 2 pickled the EMA sums and had no n_keys_; format 3 derives both."""
    codebook = copy.deepcopy(fitted["KeyCodebook"])
    state = skkvb._persistence.untag_state(codebook.__getstate__(), "KeyCodebook")
    del state["n_keys_"]
    state["_key_sums"] = codebook.keys_ * codebook.key_counts_[..., None]
    monkeypatch.setattr(skkvb._persistence, "STATE_FORMAT", 2)
    old = pickle.dumps(skkvb._persistence.tag_state(state))
    monkeypatch.undo()
    loaded = KeyCodebook.__new__(KeyCodebook)
    loaded.__setstate__(pickle.loads(old))
    assert fingerprint(loaded) == fingerprint(codebook)  # no _key_sums; n_keys_ from keys_
    loaded.partial_fit(X_IRIS[::-1])
    codebook.partial_fit(X_IRIS[::-1])
    np.testing.assert_array_equal(loaded.keys_, codebook.keys_)


def test_format_2_classifiers_are_refused_with_a_reason(fitted, monkeypatch):
    """Format 2 has no calibration sample, class totals or distance sums, and
    they do not follow from the counts: loading says so instead of failing later."""
    clf = fitted["KeyValueBottleneckClassifier"]
    state = skkvb._persistence.untag_state(clf.__getstate__(), "KeyValueBottleneckClassifier")
    monkeypatch.setattr(skkvb._persistence, "STATE_FORMAT", 2)
    old = skkvb._persistence.tag_state(state)
    monkeypatch.undo()
    loaded = KeyValueBottleneckClassifier.__new__(KeyValueBottleneckClassifier)
    with pytest.raises(ValueError, match="pickled in state format 2.*Fit it again"):
        loaded.__setstate__(old)


# ------------------------------------------------------------ all or nothing


def test_a_failed_refit_keeps_the_previous_model_whole(fitted):
    """Checks that run after validation (here: the partition projection needs a
    feature per codebook) must not leave n_features_in_ or feature names of the
    new X on the old model."""
    pd = pytest.importorskip("pandas")
    clf = copy.deepcopy(fitted["KeyValueBottleneckClassifier"])
    clf.set_params(codebook=tiny_codebook(projection="partition"))
    before = fingerprint(clf)
    narrow = pd.DataFrame(X_IRIS[:, :2], columns=["a", "b"])
    with pytest.raises(ValueError, match="needs at least one feature per codebook"):
        clf.fit(narrow, Y_IRIS)
    assert fingerprint(clf) == before
    assert clf.n_features_in_ == 4 and not hasattr(clf, "feature_names_in_")
    assert clf.predict(X_IRIS).shape == (150,)


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
    clf = tiny_sgd_classifier(batch_size=16, partial_fit_max_iter=3)
    return clf.partial_fit(X_IRIS[Y_IRIS < 2], Y_IRIS[Y_IRIS < 2])


def _unfitted_stream():
    return tiny_sgd_classifier(batch_size=16, partial_fit_max_iter=3)


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


@pytest.mark.parametrize("first_call", [True, False], ids=["first-call", "later-call"])
def test_interrupted_count_leaves_the_classifier_as_it_was(iris_codebook, first_call, monkeypatch):
    """Interrupted after the scatter-add wrote into the table: the rows are put back."""

    def counting():
        return KeyValueBottleneckClassifier(codebook=iris_codebook, value_update="count")

    clf = counting()
    if not first_call:
        clf.partial_fit(X_IRIS[::3], Y_IRIS[::3])
    before = fingerprint(clf)

    def add_then_interrupt(*args, **kwargs):
        add_counts(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(skkvb.engine.values.count, "add_counts", add_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        clf.partial_fit(X_IRIS[1::3], Y_IRIS[1::3])
    assert fingerprint(clf) == before
    monkeypatch.undo()
    clf.partial_fit(X_IRIS[1::3], Y_IRIS[1::3])
    twin = counting()
    if not first_call:
        twin.partial_fit(X_IRIS[::3], Y_IRIS[::3])
    twin.partial_fit(X_IRIS[1::3], Y_IRIS[1::3])
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
