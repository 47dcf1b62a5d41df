"""Input checks shared by the estimators, at the public edge."""

from numbers import Integral

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import FLOAT_DTYPES, check_is_fitted, validate_data

from ._compat import Interval

__all__ = ["Count", "check_float32_range", "first_partial_fit", "is_fitted", "validate_features"]


class Count(Interval):
    """An integer parameter constraint >= ``low`` that, unlike sklearn's
    ``Interval(Integral, ...)``, refuses booleans (``n_keys=True`` is no count)."""

    def __init__(self, low=1):
        super().__init__(Integral, low, None, closed="left")

    def is_satisfied_by(self, val):
        return not isinstance(val, (bool, np.bool_)) and super().is_satisfied_by(val)

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_float32_range(X):
    """Reject finite float64 values that the engine's float32 would turn into inf."""
    if X.dtype != np.float64:
        return X
    data = X.data if sp.issparse(X) else X
    if data.size and max(data.max(), -data.min()) > _FLOAT32_MAX:
        raise ValueError(
            "X contains values beyond the float32 range (|x| > 3.4e38); the keys are "
            "computed in float32, where they would be infinite. Rescale X."
        )
    return X


def validate_features(estimator, X, y="no_validation", reset=True, **check_params):
    """``validate_data`` for the bottleneck's estimators: dense float or CSR, within
    float32's range. Returns X, or (X, y) when y is to be validated too (as
    ``validate_data``: pass y, even None, to require it). ``check_params`` go
    to ``validate_data`` (e.g. ``multi_output=True``)."""
    out = validate_data(
        estimator, X, y, accept_sparse="csr", dtype=FLOAT_DTYPES, reset=reset, **check_params
    )
    if isinstance(y, str) and y == "no_validation":
        return check_float32_range(out)
    X, y = out
    return check_float32_range(X), y


def first_partial_fit(estimator, fitted_attribute):
    """Whether this ``partial_fit`` call is the estimator's first.

    sklearn's ``_fit_context`` checks the parameters on the first call only; a
    parameter set between later calls is checked here, before any state changes.
    """
    if not hasattr(estimator, fitted_attribute):
        return True
    estimator._validate_params()
    return False


def is_fitted(estimator):
    """Whether ``check_is_fitted`` passes, as a bool."""
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        return False
    return True
