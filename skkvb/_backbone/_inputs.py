"""Inputs on their way to the encoder.

Validating them (numeric arrays, or lists of PIL images, arrays, image paths or
anything a plain callable takes), choosing the preprocessing, decoding each
batch into a tensor, and keying inputs for the embedding cache. Image files are
decoded one batch at a time, so a long list of paths is never in memory at once.
"""

import os

import numpy as np
import torch
from sklearn.utils.validation import check_array, validate_data

__all__ = ["as_is_batch", "decode_batch", "inputs_key", "resolve_preprocess", "validate_inputs"]


def resolve_preprocess(preprocess, weights_entry, torch_backbone):
    """Return ``(input mode, preprocessing callable or None)``.

    Modes: "as_is" (batches untouched), "decode" (images to float, uint8 scaled),
    "per_sample" (a user callable, one sample at a time) and "transforms"
    (torchvision's weights transforms, which also take whole batches).
    """
    if callable(preprocess):
        return "per_sample", preprocess
    if preprocess is None or not torch_backbone:
        return "as_is", None
    if weights_entry is not None:
        return "transforms", weights_entry.transforms()
    return "decode", None


def validate_inputs(estimator, X, mode, reset):
    """Return ``X`` as a validated numeric array or as a list of samples.

    Only 2-D arrays have features for ``n_features_in_``: fitting on anything
    else forgets those of an earlier fit.
    """
    if _is_sequence(X):
        if len(X) == 0:
            raise ValueError("X is empty: at least one sample is required.")
        if mode == "as_is" or _is_image_item(X[0]):
            return list(X)
    if _ndim(X) <= 2:
        return validate_data(estimator, X, reset=reset, dtype="numeric")
    if reset:
        for name in ("n_features_in_", "feature_names_in_"):
            estimator.__dict__.pop(name, None)
    return check_array(X, allow_nd=True, dtype="numeric")


def as_is_batch(chunk, device):
    """A slice of inputs for an encoder that takes them as they are.

    With a ``device`` (a torch encoder), a numeric array becomes a float32
    tensor there; without, or for a list, the slice is unchanged.
    """
    if device is not None and isinstance(chunk, np.ndarray):
        return torch.tensor(chunk, dtype=torch.float32, device=device)
    return chunk


def decode_batch(chunk, mode, preprocess):
    """A slice of validated image inputs -> a preprocessed float tensor batch."""
    if isinstance(chunk, list):
        samples = [_decode_sample(item) for item in chunk]  # their sizes may differ
        batch = _stack(samples if preprocess is None else [preprocess(s) for s in samples])
    else:
        batch = _decode_array(chunk)
        if mode == "per_sample":
            batch = torch.stack([preprocess(sample) for sample in batch])
        elif mode == "transforms":  # torchvision's presets take whole batches
            batch = preprocess(batch)
    if preprocess is None and batch.dtype == torch.uint8:
        batch = batch.float().div_(255)
    return batch.float()


def inputs_key(X, mode):
    """What identifies ``X`` in the cache: an image file by its path, time and size."""
    if not isinstance(X, list) or mode == "as_is":
        return X
    return [_file_key(item) if isinstance(item, (str, os.PathLike)) else item for item in X]


def _is_sequence(X):
    """A list or tuple, or a 1-D array of strings or objects (paths, images, texts)."""
    if isinstance(X, np.ndarray):
        return X.ndim == 1 and X.dtype.kind in "OUS"
    return isinstance(X, (list, tuple))


def _is_image_item(item):
    if isinstance(item, (str, os.PathLike)):
        return True
    if isinstance(item, np.ndarray):
        return item.ndim in (2, 3)
    return type(item).__module__.startswith("PIL.")


def _ndim(X):
    ndim = getattr(X, "ndim", None)
    return np.asarray(X).ndim if ndim is None else ndim


def _file_key(path):
    stat = os.stat(path)
    return os.fspath(path), stat.st_mtime_ns, stat.st_size


def _decode_array(chunk):
    """A numpy batch -> a (B, C, H, W) tensor (or (B, D) rows); dtype kept."""
    batch = torch.tensor(chunk)
    if batch.ndim == 3:
        return batch.unsqueeze(1).expand(-1, 3, -1, -1)
    if batch.ndim == 4 and batch.dtype == torch.uint8:
        return batch.permute(0, 3, 1, 2)
    return batch


def _decode_sample(item):
    """A file path, PIL image or (H, W[, C]) array -> a (C, H, W) tensor."""
    if isinstance(item, (str, os.PathLike)):
        from PIL import Image

        with Image.open(item) as image:
            item = np.asarray(image.convert("RGB"))
    elif not isinstance(item, np.ndarray):
        item = np.asarray(item.convert("RGB"))
    sample = torch.tensor(item)
    return sample.expand(3, -1, -1) if sample.ndim == 2 else sample.permute(2, 0, 1)


def _stack(samples):
    shapes = {tuple(sample.shape) for sample in samples}
    if len(shapes) > 1:
        raise ValueError(
            f"The images have different sizes {sorted(shapes)[:3]}...; pass a preprocess "
            "that resizes them to one size."
        )
    return torch.stack(samples)
