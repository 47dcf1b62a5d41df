"""Value rules of the bottleneck, each a :class:`ValueModel` behind one interface.

``VALUE_MODELS`` maps the classifier's ``value_update`` names to the rules; a
new rule is a new subclass registered here. :class:`RegressionValues` are the
regressor's. ``DECODER_MODELS`` maps the classifier's parametric ``decoder``
names to their models, which train SGD values and the decoder together.
"""

from ._base import ValueModel
from .count import (
    DENSE_LIMIT_BYTES,
    CountValues,
    add_counts,
    count_values,
    decode_counts,
    leave_one_out_counts,
    remove_counts,
)
from .decoded import LinearDecoderValues
from .decoding import decode, decode_stable, mean_over_codebooks, mean_over_kept_codebooks
from .regression import RegressionValues, add_target_stats, key_target_stats, pool_key_means
from .residual import ResidualCountValues
from .sgd import SGDValues, auto_learning_rate, sgd_step, smoothed_targets
from .sparse_counts import SparseCounts

__all__ = [
    "DECODER_MODELS",
    "DENSE_LIMIT_BYTES",
    "VALUE_MODELS",
    "CountValues",
    "LinearDecoderValues",
    "RegressionValues",
    "ResidualCountValues",
    "SGDValues",
    "SparseCounts",
    "ValueModel",
    "add_counts",
    "add_target_stats",
    "auto_learning_rate",
    "count_values",
    "decode",
    "decode_counts",
    "decode_stable",
    "key_target_stats",
    "leave_one_out_counts",
    "mean_over_codebooks",
    "mean_over_kept_codebooks",
    "pool_key_means",
    "remove_counts",
    "sgd_step",
    "smoothed_targets",
]

# The classifier's value rules; the regressor has one rule of its own, RegressionValues.
VALUE_MODELS = {
    model.name: model for model in (CountValues, SGDValues, ResidualCountValues)
}
# Parametric decoders (the classifier's decoder != "mean"): each reads SGD values.
DECODER_MODELS = {model.decoder: model for model in (LinearDecoderValues,)}
