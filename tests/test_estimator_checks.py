"""scikit-learn's common estimator checks, with no expected failures."""

from _helpers import ShapeAgnostic
from sklearn.utils.estimator_checks import parametrize_with_checks

from skkvb import (
    FrozenBackboneTransformer,
    KeyCodebook,
    KeyValueBottleneckClassifier,
    KeyValueBottleneckRegressor,
)

# Small codebooks keep the ~50 checks per estimator fast; the defaults are
# exercised by test_classifier.py.
ESTIMATORS = [
    KeyCodebook(n_codebooks=8, n_keys=32, key_dim=4),
    KeyCodebook(n_codebooks=2, n_keys=16, projection="partition"),
    KeyValueBottleneckClassifier(codebook=KeyCodebook(n_codebooks=32, n_keys=64, key_dim=4)),
    KeyValueBottleneckClassifier(
        codebook=KeyCodebook(n_codebooks=32, n_keys=64, key_dim=4), value_update="count"
    ),
    KeyValueBottleneckClassifier(
        codebook=KeyCodebook(n_codebooks=32, n_keys=64, key_dim=4),
        value_update="count-residual",
    ),
    KeyValueBottleneckRegressor(codebook=KeyCodebook(n_codebooks=32, n_keys=64, key_dim=4)),
    # A parameter-free, shape-agnostic module: see ShapeAgnostic's docstring.
    FrozenBackboneTransformer(ShapeAgnostic(), device="cpu"),
]
EXPECTED_FAILURES = {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=lambda est: EXPECTED_FAILURES)
def test_sklearn_compatible(estimator, check):
    check(estimator)
