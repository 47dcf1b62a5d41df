"""The frozen-encoder transformer, split by job.

- ``_models``: building the encoder and loading its weights.
- ``_inputs``: validating, preprocessing and decoding inputs.
- ``_capture``: capturing a layer's output and pooling it to rows.
- ``_transformer``: the :class:`FrozenBackboneTransformer` estimator.
"""

from ._transformer import FrozenBackboneTransformer

__all__ = ["FrozenBackboneTransformer"]
