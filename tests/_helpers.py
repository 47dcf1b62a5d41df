"""Small helpers shared by the test modules: data, small estimators, state digests.

Fixtures live in conftest.py; hypothesis strategies in _strategies.py. Test
modules import from here, never from one another.
"""

import io
import pickle

import joblib
import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.datasets import load_iris
from torch import nn

from skkvb import KeyCodebook, KeyValueBottleneckClassifier
from skkvb.engine.values import SparseCounts, ValueModel

# Read-only by convention: no test changes them in place.
X_IRIS, Y_IRIS = load_iris(return_X_y=True)


# ------------------------------------------------------------ estimators


def small_codebook(**params):
    """16 codebooks of 32 keys of dimension 3: small enough for iris, big enough to learn."""
    return KeyCodebook(**{"n_codebooks": 16, "n_keys": 32, "key_dim": 3, "random_state": 0, **params})


def tiny_codebook(**params):
    """4 codebooks of 8 keys of dimension 2: for tests of state, not of accuracy."""
    return small_codebook(**{"n_codebooks": 4, "n_keys": 8, "key_dim": 2, **params})


def tiny_sgd_classifier(**params):
    """The paper's SGD values on a tiny codebook: the path with epochs to
    interrupt and steps to count."""
    return KeyValueBottleneckClassifier(
        **{"codebook": tiny_codebook(), "random_state": 0, "value_update": "sgd", **params}
    )


class ShapeAgnostic(nn.Module):
    """Elementwise, so it takes any input shape and never mixes samples.

    Parameter-free on purpose: torch pickles a tensor's storage under its memory
    address, so ``joblib.hash`` of a deep copy of any tensor differs from the
    original and check_estimators_overwrite_params would report a mutation that
    did not happen. test_backbone.py's test_module_passed_in_is_never_mutated
    covers a module with parameters.
    """

    scale = 0.5

    def forward(self, x):
        return torch.tanh(self.scale * x)


class TinyConvNet(nn.Module):
    """A small image classifier; counts the samples its forward pass sees."""

    samples_seen = []

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, stride=2)
        )
        self.head = nn.Linear(5, 2)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)

    def forward(self, x):
        TinyConvNet.samples_seen.append(len(x))
        return self.head(self.features(x).mean((2, 3)))

    def embed(self, x):
        return self.features(x)


# ------------------------------------------------------------ streams


def class_incremental(X, y, n_phases=5):
    """Yield (X, y) of each phase: the sorted classes in ``n_phases`` groups, in order."""
    for phase in np.array_split(np.unique(y), n_phases):
        mask = np.isin(y, phase)
        yield X[mask], y[mask]


# ------------------------------------------------------------ state


def _canonical(value):
    if isinstance(value, torch.Tensor):
        return ("tensor", str(value.dtype), str(value.device), value.detach().cpu().numpy())
    if isinstance(value, np.random.RandomState):
        return ("random state", value.get_state())
    if isinstance(value, nn.Module):
        return ("module", repr(value), _canonical(dict(value.state_dict())))
    if isinstance(value, (BaseEstimator, ValueModel, SparseCounts)):
        return (type(value).__name__, _canonical(vars(value)))
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(item) for item in value]
    return value


def fingerprint(estimator):
    """Digest of ALL state: every attribute, private ones, nested estimators,
    tensors and random states included, by value. Equal digests before and
    after a call: the call changed nothing."""
    return joblib.hash(_canonical(vars(estimator)))


def round_trip(estimator, how):
    """``estimator`` dumped and loaded again with pickle or joblib."""
    if how == "pickle":
        return pickle.loads(pickle.dumps(estimator))
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    buffer.seek(0)
    return joblib.load(buffer)


def fetched_rows(codebook, X, weights=None):
    """(C, K) mask of the keys some sample of X (of positive weight) fetches."""
    codes = codebook.transform(X)
    if weights is not None:
        codes = codes[weights > 0]
    fetched = np.zeros(codebook.keys_.shape[:2], dtype=bool)
    fetched[np.arange(codes.shape[1]), codes] = True
    return fetched


def reference_counts(codes, labels, n_keys, n_classes, weights=None):
    """Slow numpy count table: one sample and one codebook at a time."""
    n_samples, n_codebooks = codes.shape
    weights = np.ones(n_samples) if weights is None else weights
    counts = np.zeros((n_codebooks, n_keys, n_classes))
    for i in range(n_samples):
        for c in range(n_codebooks):
            counts[c, codes[i, c], labels[i]] += weights[i]
    return counts


# ------------------------------------------------------------ encoders


class Returns(nn.Module):
    """A module whose forward returns ``make(x)``: a dict, a tuple, a scalar, ..."""

    def __init__(self, make):
        super().__init__()
        self.make = make

    def forward(self, x):
        return self.make(x)


def assert_fit_fails_untouched(fitted, X, message, error=ValueError, **params):
    """``fitted.set_params(**params).fit(X)`` raises ``error`` matching ``message``
    and leaves every fitted attribute as it was (fit is all or nothing)."""
    import pytest

    before = {name: value for name, value in vars(fitted).items() if name not in params}
    with pytest.raises(error, match=message):
        fitted.set_params(**params).fit(X)
    after = {name: value for name, value in vars(fitted).items() if name not in params}
    assert after.keys() == before.keys()
    assert all(after[name] is value for name, value in before.items())
