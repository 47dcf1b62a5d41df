"""The parametric decoder (``decoder="linear"``, the paper's ablation of the
mean): its engine step against autograd, growth of its columns, and the
classifier with it -- validation, shapes, determinism, persistence,
all-or-nothing calls, that it learns, and that the default is unchanged.
"""

import numpy as np
import pytest
import torch
from _helpers import X_IRIS, Y_IRIS, fingerprint, round_trip, small_codebook
from sklearn.frozen import FrozenEstimator

import skkvb.engine.values.decoded
from skkvb import KeyCodebook, KeyValueBottleneckClassifier
from skkvb._compat import InvalidParameterError
from skkvb.engine.decoders import (
    auto_decoder_learning_rate,
    grown_linear_decoder,
    linear_decode,
    linear_decoder,
    linear_decoder_step,
)
from skkvb.engine.values import DECODER_MODELS, decode_stable, sgd_step, smoothed_targets
from skkvb.streams import make_gaussian_toy


def _codebook():
    return KeyCodebook(n_codebooks=8, n_keys=16, key_dim=4, random_state=0)


def _linear(**params):
    return KeyValueBottleneckClassifier(
        **{"codebook": _codebook(), "value_update": "sgd", "decoder": "linear",
           "random_state": 0, "device": "cpu", **params}
    )


def _random_problem(seed=0, n_codebooks=4, n_keys=5, n_columns=3, n_batch=7):
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(n_codebooks * n_keys, n_columns, generator=generator)
    weight = torch.randn(n_codebooks, n_columns, n_columns, generator=generator)
    bias = torch.randn(n_columns, generator=generator)
    codes = torch.randint(n_keys, (n_batch, n_codebooks), generator=generator)
    rows = codes + n_keys * torch.arange(n_codebooks)
    labels = torch.randint(n_columns, (n_batch,), generator=generator)
    weights = torch.rand(n_batch, generator=generator)
    return values, weight, bias, rows, labels, weights


# ---------------------------------------------------------------- engine


def test_linear_decode_is_a_linear_layer_over_the_concatenated_values():
    values, weight, bias, rows, _, _ = _random_problem()
    n_batch, n_codebooks = rows.shape
    fetched = values[rows]  # (B, C, d)
    slow = torch.stack([
        sum(fetched[i, c] @ weight[c] for c in range(n_codebooks)) / n_codebooks + bias
        for i in range(n_batch)
    ])
    torch.testing.assert_close(linear_decode(fetched, weight, bias), slow)
    keep = torch.rand(n_batch, n_codebooks, generator=torch.Generator().manual_seed(1)) > 0.4
    keep[0] = False  # a sample that keeps no codebook gets the bias
    slow_kept = torch.stack([
        sum((fetched[i, c] @ weight[c] for c in range(n_codebooks) if keep[i, c]),
            torch.zeros(3)) / max(int(keep[i].sum()), 1) + bias
        for i in range(n_batch)
    ])
    torch.testing.assert_close(linear_decode(fetched, weight, bias, keep), slow_kept)


def test_identity_decoder_is_the_mean():
    values, _, _, rows, _, _ = _random_problem()
    weight, bias = linear_decoder(4, 3, "cpu")
    torch.testing.assert_close(
        linear_decode(values[rows], weight, bias), decode_stable(values, rows)
    )


@pytest.mark.parametrize("with_weights", [False, True])
def test_step_is_plain_sgd_on_the_loss_autograd_computes(with_weights):
    values, weight, bias, rows, labels, weights = _random_problem()
    weights = weights if with_weights else None
    targets = smoothed_targets(labels, 3, 0.1)
    learning_rate, decoder_rate = 0.7, 0.3
    leaves = [t.clone().requires_grad_() for t in (values, weight, bias)]
    logits = linear_decode(leaves[0][rows], leaves[1], leaves[2])
    per_sample = -(targets * torch.log_softmax(logits, 1)).sum(1)
    if weights is not None:
        per_sample = per_sample * weights
    per_sample.mean().backward()
    linear_decoder_step(values, weight, bias, rows, targets, learning_rate, decoder_rate, weights)
    torch.testing.assert_close(values, leaves[0].detach() - learning_rate * leaves[0].grad)
    torch.testing.assert_close(weight, leaves[1].detach() - decoder_rate * leaves[1].grad)
    torch.testing.assert_close(bias, leaves[2].detach() - decoder_rate * leaves[2].grad)


def test_first_step_from_the_identity_moves_the_values_as_the_mean_does():
    values, _, _, rows, labels, weights = _random_problem()
    weight, bias = linear_decoder(4, 3, "cpu")
    reference = values.clone()
    sgd_step(reference, rows, labels, 4.0, 0.1, weights)
    linear_decoder_step(values, weight, bias, rows, smoothed_targets(labels, 3, 0.1), 4.0, 0.25,
                        weights)
    torch.testing.assert_close(values, reference)


def test_auto_decoder_learning_rate():
    assert auto_decoder_learning_rate(64.0, 64) == 1 / 64


def test_grown_decoder_copies_columns_and_zeroes_cross_terms_between_copies():
    weight = torch.arange(2 * 3 * 3, dtype=torch.float32).view(2, 3, 3)
    bias = torch.tensor([10.0, 11.0, 12.0])
    index = [0, 2, 1, 2, 2]  # old 0, a new class, old 1, a new class, "not yet seen"
    grown, grown_bias = grown_linear_decoder(weight, bias, index)
    assert grown.shape == (2, 5, 5)
    np.testing.assert_array_equal(grown_bias.numpy(), [10.0, 12.0, 11.0, 12.0, 12.0])
    for i, a in enumerate(index):
        for j, b in enumerate(index):
            expected = 0.0 if (a == b and i != j) else weight[:, a, b]
            np.testing.assert_array_equal(grown[:, i, j].numpy(), expected)


# ---------------------------------------------------------------- classifier


@pytest.mark.parametrize(
    "params",
    [{"decoder": "mlp"}, {"decoder": None}, {"decoder_learning_rate": 0.0},
     {"decoder_learning_rate": -1.0}, {"decoder_learning_rate": "fast"},
     {"decoder_learning_rate": float("nan")}],
)
def test_invalid_parameters_are_refused(params):
    with pytest.raises(InvalidParameterError, match=next(iter(params))):
        _linear(**params).fit(X_IRIS, Y_IRIS)


def test_decoder_options_follow_the_engine():
    constraint = KeyValueBottleneckClassifier._parameter_constraints["decoder"][0]
    assert constraint.options == {"mean", *DECODER_MODELS}


@pytest.mark.parametrize("call", ["fit", "partial_fit"])
def test_a_parametric_decoder_needs_sgd_values(call):
    clf = _linear(value_update="count")
    with pytest.raises(ValueError, match="decoder='linear'.*value_update='sgd'"):
        getattr(clf, call)(X_IRIS, Y_IRIS)
    assert not hasattr(clf, "classes_")


def test_a_fitted_model_left_whole_when_the_decoder_does_not_fit_the_values():
    clf = _linear().fit(X_IRIS, Y_IRIS)
    before = fingerprint(clf)
    with pytest.raises(ValueError, match="value_update='sgd'"):
        clf.set_params(value_update="count").fit(X_IRIS, Y_IRIS)
    assert fingerprint(clf.set_params(value_update="sgd")) == before


@pytest.mark.parametrize("trained, asked", [("linear", "mean"), ("mean", "linear")])
def test_partial_fit_cannot_switch_the_decoder(trained, asked):
    clf = _linear(decoder=trained).partial_fit(X_IRIS[:100], Y_IRIS[:100])
    before = fingerprint(clf)
    with pytest.raises(ValueError, match=f"decoder='{asked}'.*trained with decoder='{trained}'"):
        clf.set_params(decoder=asked).partial_fit(X_IRIS[100:], Y_IRIS[100:])
    assert fingerprint(clf.set_params(decoder=trained)) == before


def test_unlearn_is_refused():
    clf = _linear().fit(X_IRIS, Y_IRIS)
    with pytest.raises(ValueError, match="unlearn needs counting values"):
        clf.unlearn(X_IRIS[:10], Y_IRIS[:10])


def test_shapes_fit_and_growing_stream():
    clf = _linear().fit(X_IRIS, Y_IRIS)
    assert clf.predict(X_IRIS).shape == (150,)
    assert clf.predict_proba(X_IRIS).shape == (150, 3)
    assert clf.decision_function(X_IRIS).shape == (150, 3)
    assert clf.values_.shape == (8, 16, 3)
    model = clf._value_model
    assert model.weight.shape == (8, 3, 3) and model.bias.shape == (3,)

    stream = _linear().partial_fit(X_IRIS[:100], Y_IRIS[:100])
    assert stream.decision_function(X_IRIS).shape == (150,)  # two classes
    assert stream._value_model.weight.shape == (8, 3, 3)  # two classes and "not yet seen"
    stream.partial_fit(X_IRIS[100:], Y_IRIS[100:])
    assert stream.predict_proba(X_IRIS).shape == (150, 3)
    assert stream._value_model.weight.shape == (8, 4, 4)
    np.testing.assert_allclose(stream.predict_proba(X_IRIS).sum(1), 1.0, rtol=1e-6)


def test_fixed_classes_keep_the_decoder_square_in_the_classes():
    clf = _linear().partial_fit(X_IRIS[:100], Y_IRIS[:100], classes=[0, 1, 2])
    assert clf._value_model.weight.shape == (8, 3, 3)
    assert clf.predict_proba(X_IRIS).shape == (150, 3)


def test_same_random_state_gives_the_same_model():
    first = _linear(max_iter=5).fit(X_IRIS, Y_IRIS)
    second = _linear(max_iter=5).fit(X_IRIS, Y_IRIS)
    assert fingerprint(first) == fingerprint(second)
    np.testing.assert_array_equal(first.predict_proba(X_IRIS), second.predict_proba(X_IRIS))
    other = _linear(max_iter=5, random_state=1).fit(X_IRIS, Y_IRIS)
    assert not torch.equal(first._value_model.bias, other._value_model.bias)


@pytest.mark.parametrize("how", ["pickle", "joblib"])
def test_round_trip_predicts_the_same_and_keeps_training(how):
    clf = _linear(batch_size=32).partial_fit(X_IRIS[Y_IRIS < 2], Y_IRIS[Y_IRIS < 2])
    loaded = round_trip(clf, how)
    assert loaded.get_params()["decoder"] == "linear"
    assert fingerprint(loaded) == fingerprint(clf)
    np.testing.assert_array_equal(loaded.predict_proba(X_IRIS), clf.predict_proba(X_IRIS))
    for model in (clf, loaded):  # a new class grows the decoder of each the same way
        model.partial_fit(X_IRIS[Y_IRIS == 2], Y_IRIS[Y_IRIS == 2])
    assert fingerprint(loaded) == fingerprint(clf)
    np.testing.assert_array_equal(loaded.predict_proba(X_IRIS), clf.predict_proba(X_IRIS))


def test_moving_the_model_copies_the_decoder():
    model = _linear().fit(X_IRIS, Y_IRIS)._value_model
    moved = model.to("cpu", copy=True)
    moved.weight += 1.0
    moved.bias += 1.0
    assert not torch.equal(moved.weight, model.weight)
    assert not torch.equal(moved.bias, model.bias)


def test_interrupted_training_leaves_the_decoder_as_it_was(monkeypatch):
    clf = _linear(batch_size=16, partial_fit_max_iter=3).partial_fit(X_IRIS[:100], Y_IRIS[:100])
    before = fingerprint(clf)
    step = skkvb.engine.values.decoded.linear_decoder_step
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 10:  # inside the second epoch: the decoder has moved
            raise KeyboardInterrupt
        return step(*args, **kwargs)

    monkeypatch.setattr(skkvb.engine.values.decoded, "linear_decoder_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        clf.partial_fit(X_IRIS[:100], Y_IRIS[:100])
    assert fingerprint(clf) == before


def test_the_decoder_learns():
    X, y = make_gaussian_toy(random_state=0)  # 8 classes, 2-D
    codebook = FrozenEstimator(_codebook().fit(X))
    clf = _linear(codebook=codebook, max_iter=20, decoder_learning_rate=0.5).fit(X, y)
    assert clf.score(X, y) > 0.9  # chance is 1 / 8
    model = clf._value_model
    eye = torch.eye(8).expand_as(model.weight)
    assert not torch.allclose(model.weight, eye) and model.bias.abs().max() > 0
    # The learned decoder is what the logits go through.
    mean = KeyValueBottleneckClassifier(codebook=codebook, value_update="sgd").fit(X, y)
    mean._value_model.table = model.table
    assert not np.allclose(mean.decision_function(X), clf.decision_function(X))


def test_temperature_auto_reads_the_decoder():
    clf = _linear().fit(X_IRIS, Y_IRIS)
    assert np.isfinite(clf.temperature_) and clf.temperature_ > 0
    proba = clf.predict_proba(X_IRIS)
    assert np.all(np.isfinite(proba))


def test_the_default_decoder_is_the_mean_and_unchanged():
    assert KeyValueBottleneckClassifier().get_params()["decoder"] == "mean"
    codebook = FrozenEstimator(small_codebook().fit(X_IRIS))
    for value_update in ("count", "sgd"):
        default = KeyValueBottleneckClassifier(
            codebook=codebook, value_update=value_update, random_state=0
        ).fit(X_IRIS, Y_IRIS)
        mean = KeyValueBottleneckClassifier(
            codebook=codebook, value_update=value_update, random_state=0, decoder="mean",
            decoder_learning_rate=123.0,  # read by the linear decoder only
        ).fit(X_IRIS, Y_IRIS)
        assert type(mean._value_model).decoder == "mean"
        np.testing.assert_array_equal(mean.predict_proba(X_IRIS), default.predict_proba(X_IRIS))
