"""The frozen-encoder transformer, split by job.

- ``_models``: building the encoder (torchvision, timm) and loading its weights.
- ``_inputs``: validating, preprocessing and decoding inputs, keyword inputs
  included.
- ``_capture``: capturing a layer's output.
- ``_outputs``: choosing the embedding among a dict's or tuple's entries and
  pooling it to rows.
- ``_running``: batches (in DataLoader workers or not), precision, progress.
- ``_transformer``: the :class:`FrozenBackboneTransformer` estimator.
"""

from ._transformer import FrozenBackboneTransformer

__all__ = ["FrozenBackboneTransformer"]
