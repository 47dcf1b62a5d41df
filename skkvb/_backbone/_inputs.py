"""Inputs on their way to the encoder.

Validating them (numeric arrays, or lists or torch Datasets of PIL images,
arrays, image paths or anything a plain callable takes), choosing the
preprocessing, decoding each batch into a tensor, and keying inputs for the
embedding cache. Image files are decoded one batch at a time, so a long list of
paths is never in memory at once; a Dataset is read by index, never past its
``len()``.

Images: integer and bool arrays become ``uint8`` (values checked to lie in
``[0, 255]``; bool as 0/255); their channels are last ``(H, W, C)`` unless the
first axis alone looks like one (1, 3 or 4 long); one channel is repeated to
three and a fourth (alpha) dropped. 4-D float arrays are the encoder's input
``(N, C, H, W)`` and keep their channels.
"""

import itertools
import os

import numpy as np
import torch
from sklearn.utils.validation import check_array, validate_data

__all__ = [
    "as_is_batch",
    "decode_batch",
    "inputs_key",
    "in_module_dtype",
    "resolve_preprocess",
    "validate_inputs",
]

# Channel counts of an image: gray, RGB, RGBA. Only these mark an axis as the
# channel axis, so that a channels-first layout can be told from channels-last.
_IMAGE_CHANNELS = (1, 3, 4)


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
    else forgets those of an earlier fit. A Dataset of images comes back as it
    is (wrapped), to be read one batch at a time.
    """
    if _is_indexed_only(X):
        X = _Indexed(X)
    if _is_sequence(X):
        if len(X) == 0:
            raise ValueError("X is empty: at least one sample is required.")
        if mode == "as_is" or _is_image_item(X[0]):
            return X if isinstance(X, _Indexed) else list(X)
        X = X[:] if isinstance(X, _Indexed) else X  # numeric samples: one array below
    if _ndim(X) <= 2:
        return validate_data(estimator, X, reset=reset, dtype="numeric")
    if reset:
        for name in ("n_features_in_", "feature_names_in_"):
            estimator.__dict__.pop(name, None)
    X = check_array(X, allow_nd=True, dtype="numeric")
    return X if mode == "as_is" else _uint8_image(X)


def as_is_batch(chunk, device):
    """A slice of inputs for an encoder that takes them as they are.

    With a ``device`` (a torch encoder), a numeric array becomes a float32
    tensor there; without, or for a list, the slice is unchanged.
    """
    if device is not None and isinstance(chunk, np.ndarray):
        return torch.tensor(chunk, dtype=torch.float32, device=device)
    return chunk


def in_module_dtype(batch, module):
    """A float batch in the dtype of ``module``'s parameters (half, bfloat16, ...).

    A torch module computes in its own dtype and refuses float32 inputs if that
    is another; inputs of other kinds (token ids, lists) are left as they are.
    """
    dtype = _float_dtype(module) if isinstance(module, torch.nn.Module) else None
    if dtype is None or not isinstance(batch, torch.Tensor) or not batch.is_floating_point():
        return batch
    return batch.to(dtype)


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
    """A list, tuple or Dataset, or a 1-D array of strings or objects (paths, images, texts)."""
    if isinstance(X, np.ndarray):
        return X.ndim == 1 and X.dtype.kind in "OUS"
    return isinstance(X, (list, tuple, _Indexed))


def _is_indexed_only(X):
    """A torch Dataset, or any other object only indexed, never iterated.

    ``np.asarray`` and ``list`` iterate such an object by indexing until an
    IndexError, which a Dataset need not ever raise: ``len()`` is its contract.
    """
    kind = type(X)
    if isinstance(X, torch.utils.data.Dataset):
        # an iterable-style one has no indexing, and no end known before the last item
        if isinstance(X, torch.utils.data.IterableDataset) or not hasattr(kind, "__len__"):
            raise TypeError(
                f"X is a {kind.__name__}, not a map-style Dataset with __len__ and "
                "__getitem__; pass such a Dataset, a list or an array."
            )
        return True
    # numpy converts an object with __array__ through it, and one with __iter__ by it
    converted = hasattr(kind, "__array__") or hasattr(kind, "__iter__")
    return hasattr(kind, "__getitem__") and hasattr(kind, "__len__") and not converted


class _Indexed:
    """A Dataset seen as a sequence: items 0 to ``len - 1``, slices as lists."""

    def __init__(self, data):
        self.data, self._len = data, len(data)

    def __len__(self):
        return self._len

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self.data[i] for i in range(*index.indices(self._len))]
        return self.data[range(self._len)[index]]  # bounds-checked: never past len()


def _is_image_item(item):
    if isinstance(item, (str, os.PathLike)):
        return True
    if isinstance(item, np.ndarray):
        return item.ndim in (2, 3)
    return type(item).__module__.startswith("PIL.")


def _ndim(X):
    """Number of dimensions, read from the first sample of a list, never the whole list."""
    ndim = getattr(X, "ndim", None)
    if ndim is not None:
        return ndim
    if isinstance(X, (list, tuple)) and len(X) > 0:
        return 1 + np.ndim(X[0])
    return np.asarray(X).ndim


def _float_dtype(module):
    """The dtype of the module's first float parameter (or buffer), else None."""
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return None


def _file_key(path):
    stat = os.stat(path)
    return os.fspath(path), stat.st_mtime_ns, stat.st_size


def _decode_array(chunk):
    """A validated numpy batch -> a (B, C, H, W) tensor (or (B, D) rows); dtype kept.

    Integer images are ``uint8`` by now (:func:`_uint8_image`); float 4-D
    batches are already the encoder's ``(N, C, H, W)`` input.
    """
    batch = torch.tensor(chunk)
    if batch.ndim == 3:  # grayscale (N, H, W)
        return _rgb(batch.unsqueeze(1))
    if batch.ndim == 4 and batch.dtype == torch.uint8:
        return _rgb(_channels_first(batch))
    return batch


def _decode_sample(item):
    """A file path, PIL image or (H, W[, C]) array -> a (C, H, W) tensor."""
    if isinstance(item, (str, os.PathLike)):
        from PIL import Image

        with Image.open(item) as image:
            item = np.asarray(image.convert("RGB"))
    elif not isinstance(item, np.ndarray):
        item = np.asarray(item.convert("RGB"))
    sample = torch.tensor(_uint8_image(item))
    batch = sample[None, None] if sample.ndim == 2 else _channels_first(sample[None])
    return _rgb(batch)[0]


def _uint8_image(images):
    """Integer or bool images as ``uint8``, which the decoding scales by 1/255.

    Bool is 0/255, as PIL converts its 1-bit images. Values outside [0, 255]
    are not a uint8 image's (16-bit scans, labels): guessing a scale would
    silently change the embeddings, so they are refused.
    """
    if images.dtype == bool:
        return images.astype(np.uint8) * np.uint8(255)
    if images.dtype.kind not in "iu" or images.dtype == np.uint8:
        return images
    low, high = images.min(), images.max()
    if low < 0 or high > 255:
        raise ValueError(
            f"X holds {images.dtype} images with values in [{low}, {high}]; integer "
            "images are read like uint8 and must lie in [0, 255]. Scale them to uint8, "
            "or to floats in [0, 1]."
        )
    return images.astype(np.uint8)


def _channels_first(batch):
    """(N, H, W, C) -> (N, C, H, W); an (N, C, H, W) batch is kept.

    Channels-first only when axis 1 alone has an image's channel count: when
    both axes could be channels (a 3x3 RGB image) channels-last wins, as
    documented.
    """
    if batch.shape[1] in _IMAGE_CHANNELS and batch.shape[-1] not in _IMAGE_CHANNELS:
        return batch
    return batch.permute(0, 3, 1, 2)


def _rgb(batch):
    """An (N, C, H, W) image batch with 3 channels: gray repeated, alpha dropped."""
    if batch.shape[1] == 1:
        return batch.expand(-1, 3, -1, -1)
    if batch.shape[1] == 4:  # as PIL's convert("RGB"): alpha dropped, not composited
        return batch[:, :3]
    return batch


def _stack(samples):
    shapes = {tuple(sample.shape) for sample in samples}
    if len(shapes) > 1:
        raise ValueError(
            f"The images have different sizes {sorted(shapes)[:3]}...; pass a preprocess "
            "that resizes them to one size."
        )
    return torch.stack(samples)
