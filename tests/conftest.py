"""Fixtures shared by the test modules (small helpers are in _helpers.py)."""

import numpy as np
import pytest
import torch
from _helpers import (
    X_IRIS,
    Y_IRIS,
    ShapeAgnostic,
    small_codebook,
    tiny_codebook,
    tiny_sgd_classifier,
)
from sklearn.datasets import load_digits
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from skkvb import FrozenBackboneTransformer, KeyCodebook, make_streaming_pipeline

# The suite runs on tiny tensors, where intra-op parallelism only adds thread
# synchronisation (and stalls badly when the cores are shared). Benchmarks in
# benchmarks/ measure the multi-threaded speed.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_split():
    """Standardised raw pixels of sklearn's digits, 70/30 stratified split:
    X_train, X_test, y_train, y_test."""
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, random_state=0, stratify=y
    )
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


@pytest.fixture(scope="session")
def digits_codebook(digits_split):
    """Keys fitted without labels on the digits training images, then frozen."""
    codebook = KeyCodebook(n_codebooks=64, n_keys=128, key_dim=8, random_state=0)
    return FrozenEstimator(codebook.fit(digits_split[0]))


@pytest.fixture(scope="session")
def iris_codebook():
    """small_codebook() fitted on iris, then frozen."""
    return FrozenEstimator(small_codebook().fit(X_IRIS))


@pytest.fixture
def images():
    """Seven random 12x12 RGB images, uint8 (N, H, W, C)."""
    return np.random.RandomState(0).randint(0, 256, size=(7, 12, 12, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def fitted():
    """One fitted instance of each public estimator, by class name; tests that
    call anything but a prediction work on deep copies."""
    pipeline = make_streaming_pipeline(
        FrozenBackboneTransformer(ShapeAgnostic(), device="cpu"), tiny_sgd_classifier()
    )
    return {
        "KeyCodebook": tiny_codebook().fit(X_IRIS),
        "KeyValueBottleneckClassifier": tiny_sgd_classifier().fit(X_IRIS, Y_IRIS),
        "FrozenBackboneTransformer": FrozenBackboneTransformer(ShapeAgnostic(), device="cpu").fit(
            X_IRIS
        ),
        "StreamingPipeline": pipeline.partial_fit(X_IRIS, Y_IRIS),
    }
