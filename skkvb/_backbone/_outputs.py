"""From what the encoder returns to one row per sample.

Choosing the tensor (``output``) out of a dict -- a transformers
``ModelOutput`` is one -- or a tuple, then pooling it to ``(N, D)``.
transformers is never imported: a ``ModelOutput`` is recognised as a
``Mapping``.

Pooling reads a 3-D output as a sequence of tokens ``(N, T, D)`` (a
transformer's hidden states) and a 4-D or larger one as feature maps
``(N, C, *spatial)`` (a CNN's). A 3-D token output is pooled over its tokens,
masked by the inputs' ``attention_mask`` when they carry one, so that padding
does not change a sample's embedding.
"""

from collections.abc import Mapping

import numpy as np
import torch

__all__ = ["DEFAULT_OUTPUT_KEYS", "pooled_rows"]

# The entries a dict output is embedded by, the first present and not None:
# a pooled summary when the model has one, its hidden states otherwise, then a
# CLIP model's projected embeddings.
DEFAULT_OUTPUT_KEYS = ("pooler_output", "last_hidden_state", "image_embeds", "text_embeds")


def pooled_rows(out, output, pooling, mask, n_samples, layer):
    """An encoder's output for ``n_samples`` samples as a float32 ``(N, D)`` numpy array.

    ``mask`` is the batch's ``(N, T)`` attention mask, or None; ``layer`` is
    the layer the output comes from (None: the backbone), for errors.
    """
    source = "the backbone" if layer is None else f"layer={layer!r}"
    Z = _pool(_output_tensor(_selected(out, output, source), source), pooling, mask, source)
    if Z.shape[0] != n_samples:
        raise ValueError(
            f"The output of {source} has {Z.shape[0]} rows for a batch of {n_samples} "
            f"samples; expected a tensor of shape (n_samples, ...), one row per sample."
        )
    return Z.float().cpu().numpy()  # float32 also from a half or bfloat16 encoder


def _selected(out, output, source):
    """The entry ``output`` of a dict or tuple output; by default, as documented."""
    if isinstance(out, Mapping):
        return _from_mapping(out, output, source)
    if isinstance(out, (tuple, list)):
        return _from_sequence(out, output, source)
    if output is not None:
        raise ValueError(
            f"output={output!r} chooses an entry of a dict or tuple, but the output of "
            f"{source} is a {type(out).__name__}; pass output=None."
        )
    return out


def _from_mapping(out, output, source):
    keys = [key for key, value in out.items() if value is not None]
    kind = f"a {type(out).__name__} with keys {keys}"
    if output is None:
        for key in DEFAULT_OUTPUT_KEYS:
            if out.get(key) is not None:
                return out[key]
        raise ValueError(
            f"The output of {source} is {kind}, none of them a default one "
            f"{list(DEFAULT_OUTPUT_KEYS)}; expected a tensor of shape (n_samples, ...). "
            "Pass output= the key of the entry to embed."
        )
    if isinstance(output, str):
        if out.get(output) is None:
            raise ValueError(f"output={output!r} is not a key of the output of {source}, {kind}.")
        return out[output]
    values = [out[key] for key in keys]  # as a ModelOutput indexes itself: None skipped
    return _at(values, output, f"the output of {source} is {kind}")


def _from_sequence(out, output, source):
    what = f"the output of {source} is a {type(out).__name__} of {len(out)}"
    if output is None:  # its first tensor, as most modules that return several put it first
        return out[0] if out and isinstance(out[0], torch.Tensor) else out
    if isinstance(output, str):
        raise ValueError(f"output={output!r} is a key, but {what}; pass an int index.")
    return _at(out, output, what)


def _at(values, index, what):
    if not -len(values) <= index < len(values):
        raise ValueError(f"output={index!r} is out of range: {what}.")
    return values[index]


def _output_tensor(out, source):
    """The chosen output as a tensor of at least one dimension.

    A tuple or list left here is one ``output`` chose (say ``hidden_states``):
    which of its tensors to embed is the caller's to say, with ``layer``.
    """
    if isinstance(out, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in out):
        raise _not_a_tensor(f"a {type(out).__name__} of {len(out)} tensors", source)
    if not isinstance(out, torch.Tensor):
        array = np.asarray(out)
        if array.dtype.kind not in "biuf":
            raise _not_a_tensor(f"a {type(out).__name__}", source)
        out = torch.as_tensor(array)
    if out.ndim == 0:
        raise _not_a_tensor(f"a scalar ({out.dtype})", source)
    return out


def _not_a_tensor(what, source):
    return ValueError(
        f"The output of {source} is {what}; expected a tensor of shape (n_samples, ...), "
        "one row per sample. Choose one with output= (a key or index) or layer=."
    )


def _pool(Z, pooling, mask, source):
    if callable(pooling):
        Z = pooling(Z)
        if Z.ndim != 2:
            raise ValueError(f"pooling returned a {Z.ndim}-D tensor; it must return (N, D).")
        return Z
    if Z.ndim <= 2:
        return Z[:, None] if Z.ndim == 1 else Z
    if pooling == "flatten":
        return Z.flatten(1)
    Z = Z.float()  # sums of many half-precision values lose digits
    if Z.ndim == 3:
        return _pool_tokens(Z, pooling, mask, source)
    if pooling == "cls":
        raise ValueError(
            f"pooling='cls' takes the first token of an (N, T, D) sequence, but the output "
            f"of {source} has shape {tuple(Z.shape)}, feature maps (N, C, *spatial); use "
            "'avg', 'max' or 'flatten'."
        )
    return Z.flatten(2).amax(2) if pooling == "max" else Z.flatten(2).mean(2)


def _pool_tokens(Z, pooling, mask, source):
    """(N, T, D) -> (N, D): the first token, or the mean or max over the tokens in ``mask``."""
    if pooling == "cls":
        return Z[:, 0]
    if mask is None:
        return Z.amax(1) if pooling == "max" else Z.mean(1)
    keep = _token_mask(mask, Z, source)
    if pooling == "max":
        pooled = Z.masked_fill(~keep, -torch.inf).amax(1)
        return pooled.where(keep.any(1), 0.0)  # a sample without tokens: zeros
    return (Z * keep).sum(1) / keep.sum(1).clamp(min=1)


def _token_mask(mask, Z, source):
    """The ``(N, T)`` attention mask as ``(N, T, 1)`` booleans matching ``Z``'s tokens."""
    mask = torch.as_tensor(mask, device=Z.device)
    if tuple(mask.shape) != tuple(Z.shape[:2]):
        raise ValueError(
            f"The attention_mask of the inputs has shape {tuple(mask.shape)}, but the output "
            f"of {source} has {tuple(Z.shape[:2])} (samples, tokens); a masked mean needs "
            "one mask entry per token. Use pooling='cls' or a callable."
        )
    return (mask != 0)[:, :, None]
