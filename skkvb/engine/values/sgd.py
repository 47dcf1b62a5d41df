"""SGD values, the paper's rule: plain SGD on a label-smoothed cross-entropy.

Only the C rows a sample fetched receive gradient, so a step is one gather and
one scatter-add, never a pass over the whole table.
"""

import time

import torch

from ._base import ValueModel
from .decoding import decode, decode_stable

__all__ = [
    "AUTO_LEARNING_RATE_PER_CODEBOOK",
    "SGDValues",
    "auto_learning_rate",
    "sgd_step",
    "smoothed_targets",
]

# Step size per codebook of learning_rate="auto" (see auto_learning_rate).
AUTO_LEARNING_RATE_PER_CODEBOOK = 1.0

# Largest (batch x codebooks x outputs) float32 block a step gathers or
# scatters at once. Wider steps take the codebooks in groups, so that the
# block stays in the cache: otherwise a step over hundreds of classes streams
# a block of hundreds of MB through memory twice and costs more than its width.
STEP_BLOCK_BYTES = 8 * 2**20


def _codebook_groups(n_batch, n_codebooks, n_outputs):
    """Slices of codebooks whose (n_batch x group x n_outputs) block fits STEP_BLOCK_BYTES."""
    size = max(1, STEP_BLOCK_BYTES // (4 * n_batch * max(n_outputs, 1)))
    return [slice(start, start + size) for start in range(0, n_codebooks, size)]


def auto_learning_rate(n_codebooks):
    """The learning rate that ``learning_rate="auto"`` uses: ``1.0 * C``.

    Logits are the mean of C fetched values, so a plain SGD step of size lr
    moves each logit by only about lr / C. Scaling lr with C gives every logit
    a step of about 1 whatever the number of codebooks; the paper's fixed 0.3
    (a logit step of 0.3 / 256 with 256 codebooks) is why it needs thousands
    of epochs.
    """
    return AUTO_LEARNING_RATE_PER_CODEBOOK * n_codebooks


def smoothed_targets(labels, n_outputs, label_smoothing):
    """Cross-entropy targets with label smoothing spread over all outputs."""
    targets = torch.full(
        (labels.shape[0], n_outputs), label_smoothing / n_outputs, device=labels.device
    )
    targets.scatter_add_(
        1, labels.unsqueeze(1), torch.full_like(targets[:, :1], 1.0 - label_smoothing)
    )
    return targets


def sgd_step(values, rows, labels, learning_rate, label_smoothing, weights=None):
    """One plain SGD step (no momentum, no decay) on a batch, in place.

    The loss is the batch mean of ``weight * cross_entropy(mean_c v[rows], label)``
    with label smoothing. Its gradient on a fetched row is the sample's logit
    gradient divided by C; duplicates within a batch add up, exactly as the dense
    gradient of the full table would.

    Parameters
    ----------
    values : Tensor (C * K, d_v), updated in place.
    rows : int64 Tensor (B, C), rows fetched by each sample (``flat_codes``).
    labels : int64 Tensor (B,), output column of each sample.
    learning_rate, label_smoothing : float
    weights : float Tensor (B,) or None
    """
    n_batch, n_codebooks = rows.shape
    n_outputs = values.shape[1]
    groups = _codebook_groups(n_batch, n_codebooks, n_outputs)
    if len(groups) == 1:
        logits = decode(values, rows)
    else:  # the same mean, a group of codebooks at a time (rounding may differ)
        logits = sum(
            values.index_select(0, rows[:, group].reshape(-1))
            .view(n_batch, -1, n_outputs).sum(1)
            for group in groups
        ).div_(n_codebooks)
    probabilities = torch.softmax(logits, dim=1)
    grad_logits = probabilities - smoothed_targets(labels, n_outputs, label_smoothing)
    if weights is not None:
        grad_logits *= weights.unsqueeze(1)
    step = grad_logits.mul_(-learning_rate / (n_batch * n_codebooks))
    # index_put_ with accumulate sums duplicate rows; on CPU it is several
    # times faster than index_add_ along dim 0 for this shape. Codebook-major
    # order: each codebook's rows lie in one block of K table rows, so the
    # scatter walks the table block by block (1.3-1.6x faster on CPU), and every
    # row still receives its samples' steps in batch order: the same sums,
    # whether the codebooks go in one group or several.
    rows_by_codebook = rows.T
    for group in groups:
        group_rows = rows_by_codebook[group].reshape(-1)
        n_group = group_rows.numel() // n_batch
        values.index_put_(
            (group_rows,),
            step.unsqueeze(0).expand(n_group, n_batch, n_outputs).reshape(-1, n_outputs),
            accumulate=True,
        )


class SGDValues(ValueModel):
    """``value_update="sgd"``: values trained by minibatch SGD from zero.

    With a growing label set the table keeps one extra "not yet seen" column
    in the softmax: under a fixed softmax every unseen class receives the same
    negative updates, so that column is exactly what an unseen class's values
    would be. A new class starts as a copy of it; it is never predicted.
    Class weights multiply the sample weights in training; values are read as
    they are.
    """

    name = "sgd"
    hyperparameters = ("learning_rate", "batch_size", "label_smoothing")

    def _columns(self, n_classes):
        return n_classes + int(self.growing)

    def _grown_table(self, source):
        unseen_column = self.n_classes
        index = torch.as_tensor(source, device=self.device)
        index = torch.where(index >= 0, index, unseen_column)
        index = torch.cat([index, index.new_tensor([unseen_column])])
        return self.table[:, index]

    def update(
        self, rows, labels, weights, *, max_iter, random_state, on_pass=None,
        learning_rate, batch_size, label_smoothing, class_weights=None,
    ):
        if isinstance(learning_rate, str):  # "auto"
            learning_rate = auto_learning_rate(self.n_codebooks)
        learning_rate = float(learning_rate)

        def step(batch, batch_weights):
            sgd_step(
                self.table, rows[batch], labels[batch], learning_rate, label_smoothing,
                batch_weights,
            )

        return self._epochs(
            step, rows, labels, weights, class_weights, max_iter=max_iter,
            random_state=random_state, batch_size=batch_size, on_pass=on_pass,
            label_smoothing=label_smoothing,
        )

    def _epochs(self, step, rows, labels, weights, class_weights, *, max_iter, random_state,
                batch_size, on_pass, label_smoothing):
        """``max_iter`` shuffled passes of minibatch ``step(batch, batch_weights)``
        calls; the loss goes to ``on_pass`` after each. Returns ``max_iter``."""
        if class_weights is not None:  # the loss weighs each sample by its class too
            by_class = class_weights[labels]
            weights = by_class if weights is None else weights * by_class
        n_samples = rows.shape[0]
        for _ in range(max_iter):
            tic = time.perf_counter()
            order = torch.as_tensor(random_state.permutation(n_samples), device=self.device)
            for start in range(0, n_samples, batch_size):
                batch = order[start : start + batch_size]
                step(batch, None if weights is None else weights[batch])
                self.n_steps += 1
            if on_pass is not None:
                seconds = time.perf_counter() - tic
                on_pass(seconds, self._loss(rows, labels, label_smoothing))
        return max_iter

    def _loss(self, rows, labels, label_smoothing):
        """The label-smoothed cross-entropy of the batch, as a float."""
        return torch.nn.functional.cross_entropy(
            decode(self.table, rows), labels, label_smoothing=label_smoothing
        ).item()

    def logits(self, rows, **hyperparameters):
        return decode_stable(self.table, rows)[:, : self.n_classes]

    def values(self, **hyperparameters):
        return self.table[:, : self.n_classes]

    def _values_without(self, rows, labels, weights, alone, **hyperparameters):
        # A sample's steps cannot be taken out of values that later steps built
        # on; only a key no other sample trained is known: it would be zero.
        n_samples, n_codebooks = rows.shape
        fetched = self.table.index_select(0, rows.reshape(-1)).view(n_samples, n_codebooks, -1)
        return fetched[..., : self.n_classes].masked_fill(alone.unsqueeze(-1), 0.0)
