"""A parametric decoder over the fetched values: the paper's ablation of step 5.

The bottleneck's own decoder is the mean over codebooks of the fetched values
(:mod:`~skkvb.engine.values.decoding`): it has no parameters, so a sample's
step changes only the values it fetched. The linear decoder here reads the
same C fetched value rows through learned per-codebook matrices and a bias::

    logits = mean over c of (v_c @ W_c)  +  b

-- one linear layer over the concatenated values, scaled by 1 / C. Its
weights start at the identity and its bias at zero, so before any step it
*is* the mean. Every sample's step moves ``W`` and ``b``, which all samples
share: what is learned about new classes reaches every input, and the
decoder forgets what no current sample reminds it of.

Gradients are written out (no autograd), as for the values: a step is one
gather, two small matrix products and one scatter-add.
"""

import torch

__all__ = [
    "auto_decoder_learning_rate",
    "grown_linear_decoder",
    "linear_decode",
    "linear_decoder",
    "linear_decoder_step",
]


def auto_decoder_learning_rate(learning_rate, n_codebooks):
    """The decoder's step size that ``decoder_learning_rate="auto"`` uses:
    ``learning_rate / C**2``.

    The bias enters the logits as it is, a value divided by C (the mean). A
    value that every sample fetched would take a step of ``learning_rate / C``
    times the batch's mean logit gradient and move each logit by 1 / C of
    that; at ``learning_rate / C**2`` the bias -- which every sample moves --
    moves the logits as far as such a value.
    """
    return learning_rate / n_codebooks**2


def linear_decoder(n_codebooks, n_columns, device):
    """``(weight, bias)`` of a linear decoder that starts as the mean.

    ``weight`` is (C, n_columns, n_columns), the identity in every codebook;
    ``bias`` is (n_columns,) zeros; both float32 on ``device``.
    """
    eye = torch.eye(n_columns, dtype=torch.float32, device=device)
    weight = eye.expand(n_codebooks, n_columns, n_columns).clone()
    bias = torch.zeros(n_columns, dtype=torch.float32, device=device)
    return weight, bias


def linear_decode(fetched, weight, bias, keep=None):
    """Logits (N, d_out) of fetched values (N, C, d_in): the mean over codebooks
    of ``fetched[:, c] @ weight[c]``, plus ``bias``.

    ``keep`` (N, C) bool, where given, leaves the other codebooks out of each
    sample's mean (as :func:`~skkvb.engine.values.mean_over_kept_codebooks`
    does for the mean decoder); a sample that keeps none gets the bias.
    """
    n_samples, n_codebooks, n_inputs = fetched.shape
    if keep is None:
        scale = 1.0 / n_codebooks
    else:
        fetched = fetched.masked_fill(~keep.unsqueeze(-1), 0.0)
        scale = 1.0 / keep.sum(1, keepdim=True).clamp(min=1).to(fetched.dtype)
    flat = fetched.reshape(n_samples, n_codebooks * n_inputs)
    return flat @ weight.reshape(n_codebooks * n_inputs, -1) * scale + bias


def linear_decoder_step(values, weight, bias, rows, targets, learning_rate,
                        decoder_learning_rate, weights=None):
    """One plain SGD step on values and decoder together, in place.

    The loss is the batch mean of ``weight * cross_entropy(linear_decode(v[rows]), target)``
    (targets as :func:`~skkvb.engine.values.smoothed_targets` gives them, as
    :func:`~skkvb.engine.values.sgd_step` uses for the mean). The values take
    steps of ``learning_rate`` -- those of ``sgd_step`` while the decoder is
    the identity -- and ``weight`` and ``bias`` steps of
    ``decoder_learning_rate``.

    Parameters
    ----------
    values : Tensor (C * K, d), updated in place.
    weight : Tensor (C, d, d), updated in place.
    bias : Tensor (d,), updated in place.
    rows : int64 Tensor (B, C), rows fetched by each sample (``flat_codes``).
    targets : Tensor (B, d), each sample's target distribution over the columns.
    learning_rate, decoder_learning_rate : float
    weights : float Tensor (B,) or None
    """
    n_batch, n_codebooks = rows.shape
    n_columns = values.shape[1]
    flat_rows = rows.reshape(-1)
    fetched = values.index_select(0, flat_rows).view(n_batch, n_codebooks, n_columns)
    logits = linear_decode(fetched, weight, bias)
    grad_logits = torch.softmax(logits, dim=1) - targets
    if weights is not None:
        grad_logits *= weights.unsqueeze(1)
    grad_logits /= n_batch
    flat_weight = weight.view(n_codebooks * n_columns, n_columns)
    # d logits / d fetched_c = W_c.T / C; d logits / d W_c = fetched_c / C.
    grad_fetched = (grad_logits @ flat_weight.T).div_(n_codebooks)
    grad_weight = fetched.reshape(n_batch, -1).T @ grad_logits
    values.index_put_(
        (flat_rows,), grad_fetched.view(-1, n_columns).mul_(-learning_rate), accumulate=True
    )
    flat_weight.sub_(grad_weight, alpha=decoder_learning_rate / n_codebooks)
    bias.sub_(grad_logits.sum(0), alpha=decoder_learning_rate)


def grown_linear_decoder(weight, bias, index):
    """The decoder of a grown column list: ``index[j]`` is the old column new
    column ``j`` copies (a class never seen copies the "not yet seen" column).

    Inputs and outputs follow the columns alike. Two distinct columns copied
    from the same one (two classes new in the same call, or a new class and
    the "not yet seen" column) would copy its *diagonal* entry into their
    cross terms; those start at zero instead, as at the start.
    """
    index = torch.as_tensor(index, device=weight.device)
    grown = weight[:, index][:, :, index]
    shared = (index.unsqueeze(0) == index.unsqueeze(1)) & ~torch.eye(
        len(index), dtype=torch.bool, device=weight.device
    )
    return grown.masked_fill(shared.unsqueeze(0), 0.0), bias[index]
