"""Value rules of the bottleneck, each a :class:`ValueModel` behind one interface.

``VALUE_MODELS`` maps the estimators' ``value_update`` names to the rules; a
new rule is a new subclass registered here.
"""

from ._base import ValueModel
from .count import CountValues, add_counts, count_values, decode_counts
from .decoding import decode, decode_stable, mean_over_codebooks
from .sgd import SGDValues, auto_learning_rate, sgd_step, smoothed_targets

__all__ = [
    "VALUE_MODELS",
    "CountValues",
    "SGDValues",
    "ValueModel",
    "add_counts",
    "auto_learning_rate",
    "count_values",
    "decode",
    "decode_counts",
    "decode_stable",
    "mean_over_codebooks",
    "sgd_step",
    "smoothed_targets",
]

VALUE_MODELS = {model.name: model for model in (CountValues, SGDValues)}
