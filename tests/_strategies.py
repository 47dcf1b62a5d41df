"""Hypothesis strategies and settings of the property-based tests.

The properties live with their subjects (test_engine.py, test_codebook.py,
test_classifier*.py, test_label_growth.py). Data come from hypothesis' own float
arrays (bounded, often with repeated rows, which makes exact ties between keys
common); codebooks are small so that a few dozen examples per property run in
seconds on one thread.
"""

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from skkvb import KeyCodebook

PROPERTY = settings(
    max_examples=50,
    deadline=None,
    database=None,  # write nothing into the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def data_arrays(n_rows, n_features):
    return arrays(
        np.float64,
        st.tuples(n_rows, st.just(n_features)),
        elements=st.floats(-10, 10, allow_nan=False, allow_subnormal=False, width=32),
    )


@st.composite
def codebooks(draw, n_features):
    """Unfitted KeyCodebook parameters small enough for dozens of examples."""
    projection = draw(st.sampled_from(["gaussian", "partition", "none"]))
    n_codebooks = draw(st.integers(1, min(5, n_features) if projection == "partition" else 5))
    return KeyCodebook(
        n_codebooks=n_codebooks,
        n_keys=draw(st.integers(1, 12)),
        key_dim=draw(st.integers(1, 3)),
        projection=projection,
        batch_size=draw(st.integers(1, 64)),
        max_iter=draw(st.integers(1, 3)),
        random_state=draw(st.integers(0, 2**16)),
    )


@st.composite
def fitted_codebooks(draw, n_features, X):
    """A fitted codebook; sometimes its keys are replaced by heads of X and copies
    of them one rounding step away, the near-ties where the arithmetic of a
    different batch or block shape would pick another key."""
    codebook = draw(codebooks(n_features)).fit(X)
    if draw(st.booleans(), label="near-duplicate keys"):
        n_codebooks, n_keys, _ = codebook.keys_.shape
        heads = (X.astype(np.float32) @ codebook.projection_).reshape(len(X), n_codebooks, -1)
        rows = draw(st.lists(st.integers(0, len(X) - 1), min_size=n_keys, max_size=n_keys))
        keys = heads[rows].transpose(1, 0, 2).copy()
        twins = keys[:, 1::2].shape[1]
        keys[:, 1::2] = keys[:, 0::2][:, :twins] * np.float32(1 + 2**-22)
        codebook.keys_ = keys
    return codebook


def draw_list(data, elements, size, label=None):
    """An array of ``size`` values drawn from ``elements``."""
    return np.asarray(data.draw(st.lists(elements, min_size=size, max_size=size), label=label))
