"""Building the frozen encoder and loading its weights.

A torchvision model by name (weights from its enum, from a local ``state_dict``
file or from torch's hub cache, with a message that says how to work offline
when the download fails), a timm model by ``"timm/<name>"`` (pretrained
weights from the Hugging Face Hub or a local file), or a private copy of a
torch module or of the module behind a bound method. Either way the encoder
comes out in eval mode with gradients off.
"""

import copy
import difflib
import inspect
import math
import os
import pickle

import torch
from torch import nn

__all__ = ["build_encoder", "did_you_mean"]

_WEIGHTS_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
_TIMM_PREFIX = "timm/"


def build_encoder(backbone, weights, progress):
    """Return ``(private module or None, unbound method or None, weights entry or None)``.

    ``backbone`` is a torchvision model name, ``"timm/<name>"`` or a callable
    (the parameter constraints have checked that); a plain callable is used as
    it is, so no module comes back for it. The weights entry is anything with a
    ``transforms()`` method giving the weights' preprocessing.
    """
    if isinstance(backbone, str) and backbone.startswith(_TIMM_PREFIX):
        module, entry = _timm_model(backbone[len(_TIMM_PREFIX) :], weights)
        return _freeze(module), None, entry
    if isinstance(backbone, str):
        module, entry = _torchvision_model(backbone, weights, progress)
        return _freeze(module), None, entry
    if isinstance(backbone, nn.Module):
        return _freeze(_module_with_weights(copy.deepcopy(backbone), weights)), None, None
    if inspect.ismethod(backbone) and isinstance(backbone.__self__, nn.Module):
        module = _module_with_weights(copy.deepcopy(backbone.__self__), weights)
        return _freeze(module), backbone.__func__, None
    if _is_weights_file(weights):
        raise ValueError(
            f"weights={weights!r} is a weights file, but backbone={backbone!r} is not a "
            "torch module to load it into."
        )
    return None, None, None


def did_you_mean(name, choices):
    """A sentence suggesting the closest of ``choices`` to ``name``, or ``""``."""
    close = difflib.get_close_matches(name, choices, n=3)
    return f" Did you mean {', '.join(map(repr, close))}?" if close else ""


def _freeze(module):
    module.eval()
    module.requires_grad_(False)
    return module


def _torchvision_model(name, weights, progress):
    """Return ``(model, weights entry or None)`` for a torchvision model name."""
    builder = _torchvision_builder(name)
    if weights is None:
        return builder(weights=None), None
    if _is_weights_file(weights):
        model = _load_weights_file(builder(weights=None), weights)
        return model, _weights_entry_for_file(name, weights)
    entry = _weights_entry(name, weights)
    try:
        return builder(weights=entry, progress=progress), entry
    except OSError as exc:  # URLError, socket errors, an unreachable host
        raise OSError(_offline_message(name, entry, exc)) from None


def _timm_model(name, weights):
    """Return ``(model without its classifier, preprocessing entry or None)``.

    ``num_classes=0``: the model's forward gives its pooled features.
    """
    timm = _import_timm(name)
    config = _check_timm_name(timm, name)
    if weights is None:
        return timm.create_model(name, pretrained=False, num_classes=0), None
    if _is_weights_file(weights):
        model = _timm_from_file(timm, name, os.fspath(weights))
    elif isinstance(weights, str) and weights == "DEFAULT":
        try:
            model = timm.create_model(name, pretrained=True, num_classes=0)
        except OSError as exc:  # the Hub unreachable, and the weights not in its cache
            raise OSError(_timm_offline_message(name, config, exc)) from None
    else:
        raise ValueError(
            f"weights={weights!r} does not apply to backbone='timm/{name}'; use 'DEFAULT' "
            "(timm's pretrained weights; choose others by tag in the name, e.g. "
            "'timm/resnet18.a1_in1k'), None or the path of a local weights file."
        )
    return model, _TimmPreprocessing(timm.data.resolve_model_data_config(model))


def _import_timm(name):
    try:
        import timm
    except ImportError:
        raise ImportError(
            f'backbone={_TIMM_PREFIX + name!r} needs timm: pip install "skkvb[timm]"'
        ) from None
    return timm


def _check_timm_name(timm, name):
    """Return the name's pretrained config; an unknown model or tag is named."""
    architecture = timm.models.split_model_name_tag(name)[0]
    if not timm.models.is_model(architecture):
        choices, known = timm.list_models(), "a timm model (see timm.list_models())"
    else:
        try:
            return timm.models.get_pretrained_cfg(name)
        except RuntimeError:  # a tag timm does not know for this model
            choices = timm.list_pretrained(f"{architecture}.*")
            known = f"a pretrained tag of {architecture!r}: {choices}"
    raise ValueError(
        f"backbone={_TIMM_PREFIX + name!r} is not {known}.{did_you_mean(name, choices)}"
    )


def _timm_from_file(timm, name, path):
    """timm's own loader: it drops the classifier and converts old checkpoints."""
    if not os.path.isfile(path):
        raise ValueError(f"weights={path!r} is not an existing file.")
    try:
        return timm.create_model(
            name, pretrained=True, pretrained_cfg_overlay={"file": path}, num_classes=0
        )
    except (RuntimeError, pickle.UnpicklingError, EOFError, KeyError, ValueError) as exc:
        raise ValueError(
            f"weights={path!r} could not be loaded into backbone='timm/{name}': {exc}"
        ) from None


def _timm_offline_message(name, config, exc):
    repo = getattr(config, "hf_hub_id", None) or name
    return (
        f"Could not download the pretrained weights of backbone='timm/{name}' ({exc}); "
        "this machine seems to be offline. Fetch them elsewhere from\n"
        f"    https://huggingface.co/{repo}\n"
        "then either pass weights='/path/to/model.safetensors' (a local weights file) "
        "or copy the Hugging Face cache (HF_HOME) there, where timm looks before "
        "downloading."
    )


class _TimmPreprocessing:
    """timm's evaluation preprocessing, offered as a torchvision weights entry does.

    Resize (the shorter side to the input size over the crop fraction), center
    crop, scaling to [0, 1] and normalisation, on whole uint8 or float batches.
    """

    def __init__(self, config):
        self.config = config

    def transforms(self):
        from torchvision.transforms import InterpolationMode, v2

        _, height, width = self.config["input_size"]
        crop_pct = self.config.get("crop_pct") or 1.0
        mode = str(self.config.get("interpolation", "bilinear")).upper()
        interpolation = getattr(InterpolationMode, mode, InterpolationMode.BILINEAR)
        resize = [math.floor(height / crop_pct), math.floor(width / crop_pct)]
        # a square input: the shorter side is resized, keeping the aspect ratio
        size = resize[0] if height == width else resize
        return v2.Compose(
            [
                v2.Resize(size, interpolation=interpolation, antialias=True),
                v2.CenterCrop((height, width)),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(self.config["mean"], self.config["std"]),
            ]
        )


def _torchvision_builder(name):
    import torchvision.models as tvm

    try:
        return tvm.get_model_builder(name)
    except ValueError:
        raise ValueError(
            f"backbone={name!r} is not a torchvision model name (see "
            f"torchvision.models.list_models()).{did_you_mean(name, tvm.list_models())}"
        ) from None


def _weights_entry(name, weights):
    import torchvision.models as tvm

    try:
        return tvm.get_model_weights(name).verify(weights)
    except (ValueError, KeyError, TypeError):
        available = [entry.name for entry in tvm.get_model_weights(name)]
        raise ValueError(
            f"weights={weights!r} is not a weights entry of backbone={name!r}; use one of "
            f"{['DEFAULT', *available]}, None, or the path of a local state_dict file."
        ) from None


def _weights_entry_for_file(name, path):
    """The enum entry whose download has this file's name, else ``DEFAULT``.

    Its transforms are the ones the file's weights were trained with.
    """
    import torchvision.models as tvm

    try:
        enum = tvm.get_model_weights(name)
    except ValueError:
        return None
    filename = os.path.basename(os.fspath(path))
    for entry in enum:
        if os.path.basename(entry.url) == filename:
            return entry
    return enum.DEFAULT


def _offline_message(name, entry, exc):
    import torch.hub

    filename = os.path.basename(entry.url)
    checkpoints = os.path.join(torch.hub.get_dir(), "checkpoints")
    return (
        f"Could not download the weights {entry} of backbone={name!r} ({exc}); this "
        "machine seems to be offline. Fetch the file elsewhere from\n"
        f"    {entry.url}\n"
        f"then either pass weights='/path/to/{filename}' (a local state_dict file) or "
        f"put it in {checkpoints}, where torchvision looks before downloading."
    )


def _is_weights_file(weights):
    if isinstance(weights, os.PathLike):
        return True
    if not isinstance(weights, str):
        return False
    return os.path.isfile(weights) or os.sep in weights or weights.endswith(_WEIGHTS_FILE_SUFFIXES)


def _load_weights_file(module, path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"weights={path!r} is not an existing file.")
    try:
        state_dict = _read_state_dict(path)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError) as exc:
        raise ValueError(
            f"weights={path!r} is not a state_dict file torch.load can read: {exc}"
        ) from None
    try:
        module.load_state_dict(state_dict)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ValueError(f"weights={path!r} does not fit the backbone: {exc}") from None
    return module


def _read_state_dict(path):
    if path.endswith(".safetensors"):  # tensors only, by design of the format
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except SafetensorError as exc:
            raise ValueError(f"weights={path!r} is not a safetensors file: {exc}") from None
    # weights_only: a weights file from elsewhere must not run code when loaded
    return torch.load(path, map_location="cpu", weights_only=True)


def _module_with_weights(module, weights):
    if _is_weights_file(weights):
        return _load_weights_file(module, weights)
    if weights is not None and not (isinstance(weights, str) and weights == "DEFAULT"):
        raise ValueError(
            f"weights={weights!r} applies to a torchvision model name only; a module "
            "backbone keeps its own weights unless weights is a state_dict file path."
        )
    return module
