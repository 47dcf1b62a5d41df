"""skkvb: the Discrete Key-Value Bottleneck as scikit-learn estimators.

A frozen encoder maps inputs to embeddings; a fixed random projection splits
each embedding into heads; each head is snapped to its nearest key in a frozen,
unsupervised codebook; each key owns a learnable value; the values are averaged
into class logits. Only the values that a sample fetched are ever updated, so
training on new classes does not overwrite what was learned on old ones.
"""

from ._backbone import FrozenBackboneTransformer
from ._classifier import KeyValueBottleneckClassifier
from ._key_codebook import KeyCodebook
from ._regressor import KeyValueBottleneckRegressor
from ._streaming import StreamingPipeline, make_streaming_pipeline

__version__ = "0.1.0.dev0"

__all__ = [
    "FrozenBackboneTransformer",
    "KeyCodebook",
    "KeyValueBottleneckClassifier",
    "KeyValueBottleneckRegressor",
    "StreamingPipeline",
    "make_streaming_pipeline",
    "__version__",
]
