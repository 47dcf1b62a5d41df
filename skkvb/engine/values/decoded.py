"""SGD values read through a learned linear decoder (the paper's ablation).

The table is that of :class:`~skkvb.engine.values.SGDValues`; the logits are
:func:`~skkvb.engine.decoders.linear_decode` of the fetched rows instead of
their mean, and each SGD step trains the values and the decoder together.
"""

from contextlib import contextmanager

import torch

from ..decoders import (
    auto_decoder_learning_rate,
    grown_linear_decoder,
    linear_decode,
    linear_decoder,
    linear_decoder_step,
)
from .sgd import SGDValues, auto_learning_rate, smoothed_targets

__all__ = ["LinearDecoderValues"]


class LinearDecoderValues(SGDValues):
    """``value_update="sgd"`` with ``decoder="linear"``.

    ``weight`` (C, d, d) and ``bias`` (d,) are the decoder over the table's d
    columns (classes, plus "not yet seen" with a growing label set); they
    start as the mean (:func:`~skkvb.engine.decoders.linear_decoder`), so the
    first step is the mean decoder's. A grown label set grows the decoder's
    inputs and outputs as the table's columns
    (:func:`~skkvb.engine.decoders.grown_linear_decoder`).
    """

    decoder = "linear"
    hyperparameters = SGDValues.hyperparameters + ("decoder_learning_rate",)

    def __init__(self, n_codebooks, n_keys, n_classes, growing, device):
        super().__init__(n_codebooks, n_keys, n_classes, growing, device)
        self.weight, self.bias = linear_decoder(n_codebooks, self.table.shape[1], device)

    def to(self, device, copy=False):
        moved = super().to(device, copy=copy)
        moved.weight = self.weight.to(device, copy=copy)
        moved.bias = self.bias.to(device, copy=copy)
        return moved

    def add_classes(self, source):
        grown = super().add_classes(source)
        grown.weight, grown.bias = grown_linear_decoder(
            self.weight, self.bias, self._column_index(source)
        )
        return grown

    def _column_index(self, source):
        """The old column each column of the grown table copies (as ``_grown_table``)."""
        unseen_column = self.n_classes
        return [unseen_column if j < 0 else int(j) for j in source] + [unseen_column]

    @contextmanager
    def restored_on_error(self, rows):
        # Every step moves the whole decoder: keep it whole (it is small).
        weight, bias = self.weight.clone(), self.bias.clone()
        try:
            with super().restored_on_error(rows):
                yield
        except BaseException:
            self.weight.copy_(weight)
            self.bias.copy_(bias)
            raise

    def update(
        self, rows, labels, weights, *, max_iter, random_state, on_pass=None,
        learning_rate, batch_size, label_smoothing, decoder_learning_rate,
        class_weights=None,
    ):
        if isinstance(learning_rate, str):  # "auto"
            learning_rate = auto_learning_rate(self.n_codebooks)
        learning_rate = float(learning_rate)
        if isinstance(decoder_learning_rate, str):  # "auto"
            decoder_learning_rate = auto_decoder_learning_rate(learning_rate, self.n_codebooks)
        decoder_learning_rate = float(decoder_learning_rate)
        targets = smoothed_targets(labels, self.table.shape[1], label_smoothing)

        def step(batch, batch_weights):
            linear_decoder_step(
                self.table, self.weight, self.bias, rows[batch], targets[batch],
                learning_rate, decoder_learning_rate, batch_weights,
            )

        return self._epochs(
            step, rows, labels, weights, class_weights, max_iter=max_iter,
            random_state=random_state, batch_size=batch_size, on_pass=on_pass,
            label_smoothing=label_smoothing,
        )

    def _decoded(self, rows, keep=None):
        n_samples, n_codebooks = rows.shape
        fetched = self.table.index_select(0, rows.reshape(-1)).view(n_samples, n_codebooks, -1)
        return linear_decode(fetched, self.weight, self.bias, keep)

    def _loss(self, rows, labels, label_smoothing):
        return torch.nn.functional.cross_entropy(
            self._decoded(rows), labels, label_smoothing=label_smoothing
        ).item()

    def logits(self, rows, **hyperparameters):
        return self._decoded(rows)[:, : self.n_classes]

    def held_out_logits(self, rows, labels, weights, alone, drop_alone, **hyperparameters):
        # As SGDValues: a sample's steps stay in the values (and in the decoder,
        # which every sample moved); only keys it alone trained are known.
        fetched = self.table.index_select(0, rows.reshape(-1)).view(*rows.shape, -1)
        if drop_alone:
            return linear_decode(fetched, self.weight, self.bias, ~alone)[:, : self.n_classes]
        fetched = fetched.masked_fill(alone.unsqueeze(-1), 0.0)
        return linear_decode(fetched, self.weight, self.bias)[:, : self.n_classes]
