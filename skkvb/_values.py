"""Values of the bottleneck: the table, the decoders, the sparse SGD step and counts.

The table is a (C * K, d_v) tensor; a sample's codes become rows of it through
``flat_codes``. Only the C rows a sample fetched receive gradient, so a step is
one gather and one scatter-add, never a pass over the whole table.

The alternative to SGD is a table of class counts of the same shape: how much
training weight of each class fetched each key, added up by one scatter-add per
call. Its values are the log-smoothed class frequencies of each key
(``count_values``), so counting is one pass and independent of sample order.
"""

import torch

__all__ = [
    "add_counts",
    "count_values",
    "decode",
    "decode_counts",
    "decode_stable",
    "flat_codes",
    "sgd_step",
    "smoothed_targets",
    "zero_values",
]


def zero_values(n_codebooks, n_keys, n_outputs, device):
    """Value table initialised at zero, as in the paper."""
    return torch.zeros(n_codebooks * n_keys, n_outputs, dtype=torch.float32, device=device)


def flat_codes(codes, n_keys):
    """(N, C) per-codebook key indices -> (N, C) row indices of the value table."""
    offsets = n_keys * torch.arange(codes.shape[1], device=codes.device, dtype=codes.dtype)
    return codes + offsets


def decode(values, rows):
    """Non-parametric decoder: logits are the mean of the fetched values, (N, d_v)."""
    n_samples, n_codebooks = rows.shape
    fetched = values.index_select(0, rows.reshape(-1))
    return fetched.view(n_samples, n_codebooks, -1).mean(1)


def decode_stable(values, rows):
    """``decode`` for prediction: the same mean, with rounding independent of d_v.

    Each logit is summed along a contiguous row of C values, so its bits do
    not depend on the number of outputs: adding a class leaves the other
    classes' logits bit-identical wherever no fetched value changed. (The mean
    over the middle axis in ``decode`` is vectorised over d_v and its rounding
    changes with d_v; training keeps it because it is faster per step.)
    """
    n_samples, n_codebooks = rows.shape
    fetched = values.index_select(0, rows.reshape(-1)).view(n_samples, n_codebooks, -1)
    return _mean_over_codebooks(fetched)


def _mean_over_codebooks(fetched):
    """(N, C, d_v) -> (N, d_v), each logit summed along a contiguous row of C."""
    return fetched.transpose(1, 2).contiguous().sum(-1) / fetched.shape[1]


def add_counts(counts, rows, labels, weights=None):
    """Add each sample's weight to the class counts of the C rows it fetched, in place.

    One scatter-add over the (N * C) fetched entries. With unit (or integer)
    weights every entry is an integer, exact in float32 up to 2**24, so the
    result does not depend on the order or the grouping of the samples.

    Parameters
    ----------
    counts : Tensor (C * K, n_classes), updated in place.
    rows : int64 Tensor (N, C), rows fetched by each sample (``flat_codes``).
    labels : int64 Tensor (N,), class column of each sample.
    weights : float Tensor (N,) or None
        ``None`` counts every sample once.
    """
    n_samples, n_codebooks = rows.shape
    columns = labels.unsqueeze(1).expand(n_samples, n_codebooks)
    if weights is None:
        increments = torch.ones(n_samples * n_codebooks, dtype=counts.dtype, device=counts.device)
    else:
        increments = weights.to(counts.dtype).unsqueeze(1).expand(n_samples, n_codebooks)
    counts.index_put_(
        (rows.reshape(-1), columns.reshape(-1)), increments.reshape(-1), accumulate=True
    )


def count_values(counts, smoothing):
    """Values of a count table: ``log((n_y + a) / (n + a * n_classes))`` per row.

    ``n_y`` is a row's count of class y and ``n`` its total; ``a`` is the
    additive (Laplace) smoothing. Works on any (..., n_classes) slice of counts.
    """
    n_classes = counts.shape[-1]
    totals = counts.sum(-1, keepdim=True)
    return torch.log(counts + smoothing) - torch.log(totals + smoothing * n_classes)


def decode_counts(counts, rows, smoothing):
    """Logits of counting values: the mean over codebooks of the fetched
    ``count_values``, (N, n_classes); only the fetched rows are transformed."""
    n_samples, n_codebooks = rows.shape
    fetched = counts.index_select(0, rows.reshape(-1)).view(n_samples, n_codebooks, -1)
    return _mean_over_codebooks(count_values(fetched, smoothing))


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
    probabilities = torch.softmax(decode(values, rows), dim=1)
    grad_logits = probabilities - smoothed_targets(labels, n_outputs, label_smoothing)
    if weights is not None:
        grad_logits *= weights.unsqueeze(1)
    step = grad_logits.mul_(-learning_rate / (n_batch * n_codebooks))
    # index_put_ with accumulate sums duplicate rows; on CPU it is several
    # times faster than index_add_ along dim 0 for this shape.
    values.index_put_(
        (rows.reshape(-1),),
        step.unsqueeze(1).expand(n_batch, n_codebooks, n_outputs).reshape(-1, n_outputs),
        accumulate=True,
    )
