"""The non-parametric decoder (DKVB step 5): logits are the mean over codebooks
of the values each sample fetched.

A value table is a (C * K, d_v) tensor; a sample's codes become rows of it
through :func:`~skkvb.engine.codes.flat_codes`.
"""

__all__ = ["decode", "decode_stable", "mean_over_codebooks", "mean_over_kept_codebooks"]


def decode(values, rows):
    """Logits as the mean of the fetched values, (N, d_v); the fast form for training."""
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
    return mean_over_codebooks(fetched)


def mean_over_codebooks(fetched):
    """(N, C, d_v) -> (N, d_v), each logit summed along a contiguous row of C."""
    return fetched.transpose(1, 2).contiguous().sum(-1) / fetched.shape[1]


def mean_over_kept_codebooks(fetched, keep):
    """(N, C, d_v) -> (N, d_v): the mean over the codebooks where ``keep`` (N, C)
    is True, summed as :func:`mean_over_codebooks` does; zeros where none is kept."""
    kept = fetched.masked_fill(~keep.unsqueeze(-1), 0.0)
    n_kept = keep.sum(1, keepdim=True).clamp(min=1).to(fetched.dtype)
    return kept.transpose(1, 2).contiguous().sum(-1) / n_kept
