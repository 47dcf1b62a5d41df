"""Capturing the embedding: the layer it comes from.

The layer is a named submodule, or by default the input of a torchvision
model's final classification layer. A forward hook records its output (or
input) and stops the forward pass there; ``_outputs`` turns what it captured
into one row per sample.
"""

import inspect
import threading

from torch import nn

from ._models import did_you_mean

__all__ = ["layer_output", "resolve_layer"]


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


def layer_output(run, module, layer, capture_input):
    """``run()`` (the forward pass of one batch), or the output (input) of
    ``module``'s submodule ``layer`` during it."""
    if layer is None:
        return run()
    out = _run_to_layer(run, module.get_submodule(layer), capture_input)
    if out is None:
        raise ValueError(f"layer={layer!r} did not run during the forward pass.")
    return out


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


def _run_to_layer(run, target, capture_input):
    """Call ``run()`` until ``target`` runs; return its output (or input)."""
    capture = _Capture(capture_input)
    if capture_input:
        handle = target.register_forward_pre_hook(capture)
    else:
        handle = target.register_forward_hook(capture)
    outer, _current_capture.hook = getattr(_current_capture, "hook", None), capture
    try:
        run()
    except _LayerCaptured:
        pass
    finally:
        _current_capture.hook = outer
        handle.remove()
    return capture.value
