"""Hyperparameter checks shared by the estimators, with messages that name
the offending parameter."""

import numbers

from sklearn.utils import check_scalar

__all__ = ["check_choice", "check_fraction", "check_positive_int"]


def check_positive_int(value, name):
    check_scalar(value, name, target_type=numbers.Integral, min_val=1)
    return int(value)


def check_fraction(value, name, *, closed_left=True, closed_right=True, max_val=1.0):
    include = ("both" if closed_right else "left") if closed_left else ("right" if closed_right else "neither")
    check_scalar(value, name, target_type=numbers.Real, min_val=0.0, max_val=max_val, include_boundaries=include)
    return float(value)


def check_choice(value, name, options):
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {value!r}.")
    return value
