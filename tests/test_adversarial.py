"""Adversarial inputs that once gave silent wrong answers, torn state or opaque
crashes: each test's first line names the case. The shared setup is three
shifted Gaussian classes in 10-D and a small codebook of 8 x 16 keys, d_k=4."""

import pickle
import threading
import warnings

import numpy as np
import pytest
import torch
from _helpers import fingerprint
from sklearn.frozen import FrozenEstimator
from sklearn.utils._param_validation import InvalidParameterError

from skkvb import KeyCodebook, KeyValueBottleneckClassifier
from skkvb.engine.codes import nearest_keys

RNG = np.random.RandomState(0)
Y = RNG.randint(3, size=200)
X = RNG.normal(size=(200, 10)) + Y[:, None]


def codebook(**params):
    return KeyCodebook(
        **{"n_codebooks": 8, "n_keys": 16, "key_dim": 4, "device": "cpu", "random_state": 0,
           **params}
    )


def classifier(**params):
    return KeyValueBottleneckClassifier(
        **{"codebook": codebook(), "device": "cpu", "random_state": 0, **params}
    )


# ------------------------------------------------------------ 1. hyperparameters


@pytest.mark.parametrize(
    "make, params",
    [
        (classifier, {"count_smoothing": np.nan}),
        (classifier, {"value_update": "sgd", "learning_rate": np.nan}),
        (classifier, {"value_update": "sgd", "learning_rate": np.inf}),
        (codebook, {"decay": np.nan}),
        (codebook, {"n_keys": True}),
        (codebook, {"max_iter": np.True_}),
    ],
)
def test_nan_inf_and_boolean_hyperparameters_are_refused(make, params):
    """Issue 17.1: NaN / inf / boolean hyperparameters raise, naming the parameter."""
    (name,) = [key for key in params if key != "value_update"]
    with pytest.raises(InvalidParameterError, match=f"The '{name}' parameter"):
        make(**params).fit(X, Y)


def test_a_nan_set_after_fit_is_refused_at_prediction_and_changes_nothing():
    """Issue 17.1: set_params(count_smoothing=nan) after fit no longer poisons predictions."""
    model = classifier().fit(X, Y)
    before = model.predict_proba(X)
    model.set_params(count_smoothing=np.nan)
    with pytest.raises(InvalidParameterError, match="The 'count_smoothing' parameter"):
        model.predict_proba(X)
    np.testing.assert_array_equal(model.set_params(count_smoothing=0.1).predict_proba(X), before)


# ---------------------------------------------------------------- 2. scale


@pytest.mark.parametrize("exponent", [70, -70])
def test_inputs_scaled_by_a_power_of_two_give_the_same_model(exponent):
    """Issue 17.2: inputs far from 1 (here x 2**70 and x 2**-70) keep their codes."""
    reference = classifier().fit(X, Y)
    scaled = classifier().fit(X * 2.0**exponent, Y)
    np.testing.assert_array_equal(scaled.codebook_.transform(X * 2.0**exponent),
                                  reference.codebook_.transform(X))
    np.testing.assert_array_equal(scaled.predict_proba(X * 2.0**exponent),
                                  reference.predict_proba(X))


def test_inputs_of_1e20_and_1e30_are_as_accurate_as_unscaled_ones():
    """Issue 17.2: X x 1e20 once fell from 0.915 to 0.535 accuracy, x 1e30 to two codes."""
    reference = classifier().fit(X, Y).score(X, Y)
    for factor in [1e20, 1e30]:
        model = classifier().fit(X * factor, Y)
        assert model.score(X * factor, Y) >= reference - 0.02
        assert len(np.unique(model.codebook_.transform(X * factor))) > 8


def test_the_search_at_1e20_finds_the_float64_nearest_keys():
    """Issue 17.2: squared distances of 1e20-scale heads and keys would overflow float32."""
    generator = torch.Generator().manual_seed(0)
    heads = torch.randn(64, 3, 5, generator=generator) * 1e20
    keys = torch.randn(3, 32, 5, generator=generator) * 1e20
    expected = torch.cdist(heads.double().transpose(0, 1), keys.double()).argmin(-1).T
    torch.testing.assert_close(nearest_keys(heads, keys), expected)


def test_a_head_far_beyond_the_keys_changes_no_other_heads_codes():
    """Issue 17.2: a rescaling chosen per block once made codes depend on the other rows."""
    generator = torch.Generator().manual_seed(0)
    keys = torch.randn(2, 8, 3, generator=generator) * 1e-30
    heads = torch.randn(20, 2, 3, generator=generator) * 1e-30
    far = torch.randn(1, 2, 3, generator=generator)  # 1e30 times the keys' scale
    alone = nearest_keys(heads, keys)
    together = nearest_keys(torch.cat([heads, far]), keys)
    torch.testing.assert_close(together[:-1], alone, rtol=0, atol=0)
    # ||h - k||^2 ranks keys as ||k||^2 - 2 h.k; float64 resolves it (a direct
    # distance cannot: ||h|| swamps keys 1e30 times smaller).
    far64, keys64 = far.double().transpose(0, 1), keys.double()
    expected = (keys64.pow(2).sum(-1).unsqueeze(1) - 2 * far64 @ keys64.transpose(1, 2))
    torch.testing.assert_close(together[-1:], expected.argmin(-1).T, rtol=0, atol=0)


def test_inputs_beyond_what_float32_heads_hold_raise_a_clear_error():
    """Issue 17.2: the limit of the rescaling is named, not silently crossed."""
    model = classifier().fit(X, Y)
    before = fingerprint(model)
    with pytest.raises(ValueError, match="too large for float32 heads"):
        model.predict(np.full((2, 10), 3e38))
    with pytest.raises(ValueError, match="too large"):
        model.partial_fit(np.full((2, 10), 3e38), [0, 1])
    assert fingerprint(model) == before


# ------------------------------------------------- 3. frozen codebook is private


def test_a_frozen_codebook_changed_after_training_changes_nothing():
    """Issue 17.3: FrozenEstimator(k) is copied: later k.partial_fit / k.fit do not leak in."""
    keys = codebook().fit(X)
    for train in ("fit", "partial_fit"):
        model = getattr(KeyValueBottleneckClassifier(codebook=FrozenEstimator(keys)), train)(X, Y)
        before = model.predict_proba(X)
        keys.partial_fit(X[::-1])
        np.testing.assert_array_equal(model.predict_proba(X), before)
        keys.set_params(n_keys=32).fit(X)
        np.testing.assert_array_equal(model.predict_proba(X), before)
        keys = codebook().fit(X)


# ------------------------------------------------------------- 4. label types


@pytest.mark.parametrize(
    "first, later",
    [
        (np.array([0, 1, 2]), np.array([2**63, 2**63 + 1, 2**63 + 2], dtype=np.uint64)),
        (np.array([0.0, 1.0]), np.array([2**53, 2**53 + 1])),
    ],
    ids=["int-then-uint64", "float-then-int-past-2**53"],
)
def test_labels_the_class_dtype_cannot_hold_are_refused(first, later):
    """Issue 17.4: numpy promotion once merged distinct labels into one class."""
    model = classifier().partial_fit(X[: len(first)], first)
    before = fingerprint(model)
    with pytest.raises(ValueError, match="cannot hold exactly"):
        model.partial_fit(X[: len(later)], later)
    assert fingerprint(model) == before


def test_an_integral_float_label_joins_an_integer_class_list():
    """Issue 17.4: int labels then 3.0 once turned classes_ into float64."""
    model = classifier().partial_fit(X[:2], [0, 1]).partial_fit(X[2:3], [3.0])
    assert model.classes_.dtype.kind == "i" and model.classes_.tolist() == [0, 1, 3]


def test_nan_in_classes_is_refused():
    """Issue 17.4: classes=[0, 1, 2, nan] once created a NaN class."""
    model = classifier()
    with pytest.raises(ValueError, match="classes contains NaN"):
        model.partial_fit(X, Y, classes=[0, 1, 2, np.nan])
    assert not hasattr(model, "classes_")


# ------------------------------------------------------------ 5. huge weights


@pytest.mark.parametrize("value_update", ["count", "sgd"])
def test_weights_beyond_the_float32_table_are_refused(value_update):
    """Issue 17.5: sample_weight=1e38 once overflowed the counts: every probability NaN."""
    model = classifier(value_update=value_update).partial_fit(X, Y)
    before = fingerprint(model)
    with pytest.raises(ValueError, match="sample_weight adds up to"):
        model.partial_fit(X, Y, sample_weight=np.full(len(Y), 1e38))
    assert fingerprint(model) == before
    heavy = classifier(value_update=value_update).partial_fit(X, Y, sample_weight=np.full(200, 1e30))
    assert np.isfinite(heavy.predict_proba(X)).all()


# ------------------------------------------------- 6. snapshots from other threads


def test_pickling_while_another_thread_trains_never_sees_half_a_call():
    """Issue 17.6: pickle.dumps during partial_fit once returned a torn snapshot."""
    model = classifier(value_update="sgd", partial_fit_max_iter=30).partial_fit(X, Y)
    completed = [model.predict_proba(X)]
    snapshots = []

    def train():
        for _ in range(4):
            model.partial_fit(X, Y)
            completed.append(model.predict_proba(X))

    trainer = threading.Thread(target=train)
    trainer.start()
    while trainer.is_alive():
        snapshots.append(pickle.dumps(model))
    trainer.join()
    assert len(snapshots) > 1
    for dumped in snapshots:
        proba = pickle.loads(dumped).predict_proba(X)
        assert any(np.array_equal(proba, state) for state in completed)


# ---------------------------------------------------------------- 9. devices


def test_devices_that_cannot_hold_the_model_are_named():
    """Issue 17.9: device='meta' once crashed inside torch; 'mps' where absent runs on the CPU."""
    with pytest.raises(InvalidParameterError, match="The 'device' parameter"):
        classifier(device="meta").fit(X, Y)
    if not torch.backends.mps.is_available():
        with pytest.warns(UserWarning, match="device='mps' was requested but is not available"):
            model = classifier(device="mps").fit(X, Y)
        assert model._value_model.device.type == "cpu"


def test_a_misspelt_learning_rate_names_the_accepted_value():
    """Issue 17.9: learning_rate='AUTO' once gave a message without the accepted 'auto'."""
    with pytest.raises(InvalidParameterError, match=r"str among \{'auto'\}"):
        classifier(value_update="sgd", learning_rate="AUTO").fit(X, Y)


# --------------------------------------------------------- 10. corrupted files


@pytest.mark.parametrize("make", [lambda: classifier().fit(X, Y), lambda: codebook().fit(X)])
def test_a_flipped_byte_in_a_saved_model_is_refused(make):
    """Issue 17.10: a saved model with a flipped byte once loaded silently."""
    model = make()
    array = model.key_usage_ if hasattr(model, "key_usage_") else model.keys_
    dumped = bytearray(pickle.dumps(model, protocol=5))
    where = bytes(dumped).find(array.tobytes())
    assert where >= 0, "the array's bytes are stored as they are"
    dumped[where + array.nbytes // 2] ^= 0x10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="do not match the digest"):
            pickle.loads(bytes(dumped))
