"""Capturing the embedding: the layer it comes from, and pooling it to rows.

The layer is a named submodule, or by default the input of a torchvision
model's final classification layer. A forward hook records its output (or
input) and stops the forward pass there; the captured tensor is then pooled to
one row per sample.
"""

import inspect
import threading
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from ._models import did_you_mean

__all__ = ["layer_output", "pooled_rows", "resolve_layer"]


def resolve_layer(module, layer, backbone):
    """Return ``(layer name or None, capture its input?)``."""
    if layer is not None:
        if module is None:
            raise ValueError(
                f"layer={layer!r} needs a torch module backbone, got backbone={backbone!r}."
            )
        names = [name for name, _ in module.named_modules() if name]
        if layer not in names:
            hint = did_you_mean(layer, names)
            raise ValueError(f"layer={layer!r} is not a submodule of the backbone.{hint}")
        return layer, False
    # A bound method (model.extract_features) already returns the embedding.
    if module is not None and _is_torchvision_model(module) and not inspect.ismethod(backbone):
        return _final_layer(module), True
    return None, False


def _is_torchvision_model(module):
    return type(module).__module__.startswith("torchvision.models.")


def _final_layer(module):
    """Name of the final classification layer: the last Linear, else the last Conv2d."""
    for kind in (nn.Linear, nn.Conv2d):
        names = [name for name, sub in module.named_modules() if isinstance(sub, kind)]
        if names:
            return names[-1]
    raise ValueError("Could not find the final classification layer of the backbone; pass layer.")


def layer_output(call, batch, module, layer, capture_input):
    """``call(batch)``, or the output (input) of ``module``'s submodule ``layer``."""
    if layer is None:
        return call(batch)
    out = _run_to_layer(call, batch, module.get_submodule(layer), capture_input)
    if out is None:
        raise ValueError(f"layer={layer!r} did not run during the forward pass.")
    return out


def pooled_rows(out, pooling, n_samples, layer):
    """An encoder's output for ``n_samples`` samples as a float32 ``(N, D)`` numpy array.

    ``layer`` is the layer the output comes from (None: the backbone), for errors.
    """
    source = "the backbone" if layer is None else f"layer={layer!r}"
    Z = _pool(_output_tensor(out, source), pooling)
    if Z.shape[0] != n_samples:
        raise ValueError(
            f"The output of {source} has {Z.shape[0]} rows for a batch of {n_samples} "
            f"samples; expected a tensor of shape (n_samples, ...), one row per sample."
        )
    return Z.float().cpu().numpy()  # float32 also from a half or bfloat16 encoder


class _LayerCaptured(Exception):
    """Raised by the capture hook to stop the forward pass once the layer ran."""


# The capture running in each thread. A hook on the shared module fires for
# every thread's forward pass, and is pickled with the module by whoever
# serialises it mid-pass (a dask worker sending the transformer to another):
# each hook acts only for the call that registered it.
_current_capture = threading.local()


class _Capture:
    """Forward (pre-)hook that records the layer's output (or input) and stops the pass."""

    def __init__(self, capture_input):
        self.capture_input = capture_input
        self.value = None

    def __call__(self, module, args, output=None):
        if getattr(_current_capture, "hook", None) is not self:
            return None  # another thread's capture, or a pickled copy of one
        self.value = args[0] if self.capture_input else output
        raise _LayerCaptured


def _run_to_layer(call, batch, target, capture_input):
    """Run ``call(batch)`` until ``target`` runs; return its output (or input)."""
    capture = _Capture(capture_input)
    if capture_input:
        handle = target.register_forward_pre_hook(capture)
    else:
        handle = target.register_forward_hook(capture)
    outer, _current_capture.hook = getattr(_current_capture, "hook", None), capture
    try:
        call(batch)
    except _LayerCaptured:
        pass
    finally:
        _current_capture.hook = outer
        handle.remove()
    return capture.value


def _output_tensor(out, source):
    """The output as a tensor of at least one dimension.

    Of a tuple or list output, its first tensor; numeric arrays are converted.
    A dict (a transformers ``ModelOutput`` is one) has no tensor to choose by
    default: a parameter naming the entry would pick it here.
    """
    if isinstance(out, Mapping):
        raise ValueError(
            f"The output of {source} is a {type(out).__name__} with keys {list(out)[:6]}; "
            "expected a tensor of shape (n_samples, ...). Pass layer= the submodule whose "
            "output you want, or a module whose forward returns one tensor."
        )
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        out = out[0]
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
        "one row per sample."
    )


def _pool(Z, pooling):
    if callable(pooling):
        Z = pooling(Z)
        if Z.ndim != 2:
            raise ValueError(f"pooling returned a {Z.ndim}-D tensor; it must return (N, D).")
        return Z
    if Z.ndim == 1:
        return Z[:, None]
    if Z.ndim == 2:
        return Z
    if pooling == "flatten":
        return Z.flatten(1)
    if pooling == "max":
        return Z.flatten(2).amax(2)
    return Z.flatten(2).mean(2)
