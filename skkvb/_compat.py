"""The scikit-learn internals we build on, behind one module.

The estimators use scikit-learn's parameter validation (``_fit_context``,
``sklearn.utils._param_validation``) -- private modules, but the way
scikit-learn and its contrib projects declare parameters -- and its sample
weight check. Everything private is imported here, so that a change in a
scikit-learn release is mended in one place; the versions from the declared
floor (scikit-learn 1.6) up are tested.
"""

import inspect

import numpy as np
from sklearn.base import _fit_context
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    InvalidParameterError,
    StrOptions,
    validate_parameter_constraints,
)
from sklearn.utils.validation import _check_sample_weight

__all__ = [
    "HasMethods",
    "Interval",
    "InvalidParameterError",
    "StrOptions",
    "add_method_mappings",
    "check_sample_weight",
    "fit_context",
    "validate_parameter_constraints",
]

fit_context = _fit_context

# scikit-learn 1.8 rejects all-zero weights unless told otherwise; 1.6 and 1.7
# accept them and do not know the keyword.
_ZERO_WEIGHTS_KEYWORD = (
    {"allow_all_zero_weights": True}
    if "allow_all_zero_weights" in inspect.signature(_check_sample_weight).parameters
    else {}
)


def check_sample_weight(sample_weight, X):
    """Non-negative, finite float32 weights of X's length; ones for None.

    All-zero weights are accepted: a batch of zero weight is a no-op, not an error.
    """
    return _check_sample_weight(
        sample_weight, X, dtype=np.float32, ensure_non_negative=True, **_ZERO_WEIGHTS_KEYWORD
    )


def add_method_mappings(router, name, caller, callees):
    """Add ``caller -> callee`` routes for the child ``name`` of a MetadataRouter.

    A router's ``add`` replaces a child's whole method mapping, so extending a
    mapping that a parent class built (``Pipeline.get_metadata_routing``)
    edits it in place: iterating a router yields ``(name, (mapping, router))``
    pairs (``RouterMappingPair``), whose ``mapping`` is the one
    routing reads.
    """
    for child, route in router:
        if child == name:
            for callee in callees:
                route.mapping.add(caller=caller, callee=callee)
            return router
    raise KeyError(name)
