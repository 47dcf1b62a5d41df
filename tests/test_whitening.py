"""Orthogonal projections and whitening fitted on the key data (KeyCodebook)."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_digits

from skkvb import KeyCodebook, KeyValueBottleneckClassifier
from skkvb.engine.heads import make_projection
from skkvb.engine.whitening import WHITENING_SHRINKAGE, whitening_matrix


@pytest.mark.parametrize("n_features, width", [(10, 24), (8, 8), (16, 6)])
def test_orthogonal_projection_has_orthonormal_blocks_of_n_features(n_features, width):
    matrix = make_projection("orthogonal", n_features, width, 1, np.random.RandomState(0))
    assert matrix.shape == (n_features, width)
    for start in range(0, width, n_features):
        block = matrix[:, start : start + n_features].astype(np.float64)
        np.testing.assert_allclose(block.T @ block, np.eye(block.shape[1]), atol=1e-6)


def test_orthogonal_heads_keep_distances_where_width_is_a_multiple_of_n_features():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(50, 12))
    matrix = make_projection("orthogonal", 12, 6, 4, rng).astype(np.float64)  # 24 = 2 x 12
    diffs = X[:25] - X[25:]
    np.testing.assert_allclose(
        np.linalg.norm(diffs @ matrix, axis=1), np.sqrt(2) * np.linalg.norm(diffs, axis=1),
        rtol=1e-5,
    )
    # Independent Gaussian columns do not: their distances spread around the mean.
    gaussian = make_projection("gaussian", 12, 6, 4, np.random.RandomState(1)).astype(float)
    ratio = np.linalg.norm(diffs @ gaussian, axis=1) / np.linalg.norm(diffs, axis=1)
    assert ratio.std() > 0.05


def test_orthogonal_projection_is_determined_by_the_seed():
    first = make_projection("orthogonal", 20, 8, 5, np.random.RandomState(3))
    second = make_projection("orthogonal", 20, 8, 5, np.random.RandomState(3))
    np.testing.assert_array_equal(first, second)


def test_whitening_gives_unit_variance_components_without_shrinkage():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(2000, 6)) @ rng.normal(size=(6, 6)) + 5.0
    W = whitening_matrix(X, 6, shrinkage=0.0)
    np.testing.assert_allclose(np.cov(X @ W, rowvar=False, bias=True), np.eye(6), atol=1e-8)


def test_whitening_shrinks_weak_directions_and_keeps_leading_components():
    rng = np.random.RandomState(0)
    scales = np.array([10.0, 3.0, 1.0, 0.01, 0.0])
    X = rng.normal(size=(4000, 5)) * scales
    W = whitening_matrix(X, 3)
    assert W.shape == (5, 3)
    variances = np.linalg.eigvalsh(np.cov(X, rowvar=False, bias=True))[::-1]
    expected = variances[:3] / (variances[:3] + WHITENING_SHRINKAGE * variances.mean())
    np.testing.assert_allclose(np.var(X @ W, axis=0), expected, rtol=1e-6)
    # Leading directions only: the near-constant columns get no weight.
    assert np.abs(W[3:]).max() < 1e-3 * np.abs(W[:3]).max()
    assert np.isfinite(whitening_matrix(np.zeros((10, 4)), 4)).all()


def test_whitening_reads_sparse_and_dense_inputs_alike():
    X, _ = load_digits(return_X_y=True)
    np.testing.assert_allclose(
        whitening_matrix(sp.csr_matrix(X), 16, block_rows=100), whitening_matrix(X, 16),
        rtol=1e-7, atol=1e-10,
    )


def test_whiten_is_folded_into_the_projection_and_frozen_after_the_first_call():
    X, _ = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    codebook = KeyCodebook(n_codebooks=8, n_keys=16, key_dim=4, projection="orthogonal",
                           whiten=20, random_state=0)
    codebook.partial_fit(X[:600])
    projection = codebook.projection_.copy()
    plain = make_projection("orthogonal", 20, 8, 4, np.random.RandomState(0))
    np.testing.assert_allclose(
        projection, (whitening_matrix(X[:600], 20) @ plain).astype(np.float32), rtol=1e-5,
        atol=1e-6,
    )
    codebook.partial_fit(X[600:])  # later batches move keys, not the map
    np.testing.assert_array_equal(codebook.projection_, projection)
    codebook.transform(X[:10])
    np.testing.assert_array_equal(codebook.projection_, projection)


def test_whitened_codes_do_not_depend_on_the_inputs_scale():
    X, _ = load_digits(return_X_y=True)
    kwargs = dict(n_codebooks=8, n_keys=32, key_dim=4, whiten=32, max_iter=3, random_state=0)
    small = KeyCodebook(projection="orthogonal", **kwargs).fit(X)
    large = KeyCodebook(projection="orthogonal", **kwargs).fit(X * 1000.0)
    agreement = (small.transform(X) == large.transform(X * 1000.0)).mean()
    assert agreement > 0.999


def test_whiten_changes_nothing_when_left_at_none():
    X, _ = load_digits(return_X_y=True)
    default = KeyCodebook(n_codebooks=8, n_keys=16, key_dim=4, random_state=0).fit(X)
    explicit = KeyCodebook(n_codebooks=8, n_keys=16, key_dim=4, whiten=None,
                           random_state=0).fit(X)
    np.testing.assert_array_equal(default.keys_, explicit.keys_)


def test_whiten_refuses_inputs_too_wide_for_a_covariance(monkeypatch):
    import skkvb._key_codebook as module

    monkeypatch.setattr(module, "MAX_WHITEN_FEATURES", 10)
    X = np.random.RandomState(0).normal(size=(20, 11))
    with pytest.raises(ValueError, match="whiten=4 needs the 11 x 11 covariance"):
        KeyCodebook(n_codebooks=2, n_keys=4, key_dim=2, whiten=4).fit(X)


@pytest.mark.parametrize("whiten", [0, -1, 2.5, "yes"])
def test_whiten_rejects_what_is_not_a_positive_int(whiten):
    X = np.random.RandomState(0).normal(size=(20, 5))
    with pytest.raises(ValueError, match="whiten"):
        KeyCodebook(n_codebooks=2, n_keys=4, key_dim=2, whiten=whiten).fit(X)


def test_classifier_on_whitened_keys_stays_order_independent():
    X, y = load_digits(return_X_y=True)
    codebook = KeyCodebook(n_codebooks=16, n_keys=64, key_dim=8, projection="orthogonal",
                           whiten=32, random_state=0)
    order = np.argsort(y, kind="stable")  # class-incremental
    iid = KeyValueBottleneckClassifier(codebook=codebook, random_state=0).fit(X, y)
    streamed = KeyValueBottleneckClassifier(
        codebook=KeyCodebook(**codebook.get_params()), random_state=0
    )
    streamed.codebook = __import__("sklearn.frozen", fromlist=["FrozenEstimator"]).FrozenEstimator(
        iid.codebook_
    )
    for part in np.array_split(order, 5):
        streamed.partial_fit(X[part], y[part], classes=np.unique(y))
    np.testing.assert_array_equal(streamed.predict_proba(X), iid.predict_proba(X))


def test_codebook_pickled_before_whiten_existed_loads_with_it_off():
    X, _ = load_digits(return_X_y=True)
    codebook = KeyCodebook(n_codebooks=4, n_keys=8, key_dim=2, random_state=0).fit(X)
    state = codebook.__getstate__()
    del state["whiten"]  # what an earlier version wrote
    loaded = KeyCodebook.__new__(KeyCodebook)
    loaded.__setstate__(state)
    assert loaded.get_params()["whiten"] is None
    loaded.partial_fit(X[:100])
    np.testing.assert_array_equal(loaded.projection_, codebook.projection_)


def test_whiten_warns_when_fitted_on_too_few_samples_for_its_components():
    X, _ = load_digits(return_X_y=True)
    codebook = KeyCodebook(n_codebooks=4, n_keys=8, key_dim=4, whiten=32, random_state=0)
    with pytest.warns(UserWarning, match=r"whiten=32\) is fitted on 50 samples.*at least 64"):
        codebook.partial_fit(X[:50])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        codebook.partial_fit(X[50:60])  # later batches do not refit the map: no warning
        KeyCodebook(n_codebooks=4, n_keys=8, key_dim=4, whiten=32, random_state=0).fit(X[:64])
        # Components are capped at the features: 64 of them need 128 rows, not 2 * 500.
        KeyCodebook(n_codebooks=4, n_keys=8, key_dim=4, whiten=500, random_state=0).fit(X[:128])


def test_regressor_reads_a_whitened_codebook():
    from sklearn.datasets import load_diabetes

    from skkvb import KeyValueBottleneckRegressor

    X, y = load_diabetes(return_X_y=True)
    codebook = KeyCodebook(n_codebooks=32, n_keys=32, key_dim=4, whiten=10,
                           projection="orthogonal", random_state=0)
    model = KeyValueBottleneckRegressor(codebook=codebook, random_state=0).fit(X[:300], y[:300])
    assert model.codebook_.projection_.shape == (10, 128)
    assert model.score(X[300:], y[300:]) > 0.2  # 0.36 when written; unwhitened 0.48
