"""Dataset loaders: float32 NHWC images in [0, 1] and int64 labels, split into train and test.

Fashion-MNIST is read from the IDX files, looked for in this order: the ``data_dir`` argument, the
``IPGUARD_FASHION_MNIST_DIR`` environment variable, the Debian package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist/``), and finally ``keras.datasets.fashion_mnist`` (which downloads
where there is internet). CIFAR-10/100 use ``keras.datasets`` (their real loading code; it needs internet
or Keras' cache the first time).
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np

from ipguard_tf.core.errors import DataError
from ipguard_tf.io.imagenet_data import ImageNetData

log = logging.getLogger(__name__)

FASHION_MNIST_ENV = "IPGUARD_FASHION_MNIST_DIR"
FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
_FMNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
FASHION_MNIST_HINT = (
    "Fashion-MNIST not found: install the Debian package (sudo apt-get install dataset-fashion-mnist), "
    f"or set {FASHION_MNIST_ENV} / --data-dir to a folder holding the four IDX files, "
    "or run once with internet so keras.datasets can download it"
)


@dataclass(frozen=True)
class Dataset:
    """A train/test split of images in [0, 1] (float32, NHWC) with integer labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple:
        return tuple(self.x_train.shape[1:])


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a uint8 array; a malformed file raises DataError."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) < 4:
        raise DataError(f"{path} is not an IDX file (too short)")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {body.size}")
    return body.reshape(dims)


def _find_idx(directory: Path, stem: str) -> Optional[Path]:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        p = directory / name
        if p.is_file():
            return p
    return None


def _fashion_mnist_dir(data_dir: Optional[str]) -> Optional[Path]:
    candidates = []
    if data_dir:
        candidates.append(("--data-dir", Path(data_dir)))
    if os.environ.get(FASHION_MNIST_ENV):
        candidates.append((FASHION_MNIST_ENV, Path(os.environ[FASHION_MNIST_ENV])))
    candidates.append(("Debian package", Path(FASHION_MNIST_DEBIAN_DIR)))
    for origin, d in candidates:
        if all(_find_idx(d, s) for s in _FMNIST_FILES.values()):
            log.debug("Fashion-MNIST from %s (%s)", d, origin)
            return d
        if origin != "Debian package":
            raise DataError(f"{origin} folder {d} does not hold the four Fashion-MNIST IDX files")
    return None


def _to_unit_nhwc(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32) / 255.0
    if x.ndim == 3:
        x = x[..., None]
    return x


def load_fashion_mnist(data_dir: Optional[str] = None) -> Dataset:
    """Fashion-MNIST (60,000 train / 10,000 test, 28x28x1, 10 classes)."""
    d = _fashion_mnist_dir(data_dir)
    if d is not None:
        arrays = {k: read_idx(_find_idx(d, s)) for k, s in _FMNIST_FILES.items()}
    else:
        try:
            import keras

            (xtr, ytr), (xte, yte) = keras.datasets.fashion_mnist.load_data()
        except Exception:  # no internet and no cache
            raise DataError(FASHION_MNIST_HINT) from None
        arrays = {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}
    return Dataset(
        "fashion_mnist",
        _to_unit_nhwc(arrays["x_train"]),
        arrays["y_train"].astype(np.int64).reshape(-1),
        _to_unit_nhwc(arrays["x_test"]),
        arrays["y_test"].astype(np.int64).reshape(-1),
        10,
    )


def _keras_cifar(which: str, num_classes: int) -> Dataset:
    import keras

    try:
        if which == "cifar10":
            (xtr, ytr), (xte, yte) = keras.datasets.cifar10.load_data()
        else:
            (xtr, ytr), (xte, yte) = keras.datasets.cifar100.load_data(label_mode="fine")
    except Exception as exc:
        raise DataError(
            f"{which} could not be loaded through keras.datasets ({type(exc).__name__}); it needs internet "
            f"once, or the archive in ~/.keras/datasets/"
        ) from None
    return Dataset(
        which,
        _to_unit_nhwc(xtr),
        ytr.astype(np.int64).reshape(-1),
        _to_unit_nhwc(xte),
        yte.astype(np.int64).reshape(-1),
        num_classes,
    )


def load_cifar10(data_dir: Optional[str] = None) -> Dataset:
    """CIFAR-10 via ``keras.datasets`` (50,000 / 10,000, 32x32x3, 10 classes)."""
    return _keras_cifar("cifar10", 10)


def load_cifar100(data_dir: Optional[str] = None) -> Dataset:
    """CIFAR-100 (fine labels) via ``keras.datasets`` (50,000 / 10,000, 32x32x3, 100 classes)."""
    return _keras_cifar("cifar100", 100)


def load_imagenet(data_dir: Optional[str] = None):
    """ImageNet from ``data_dir`` (with ``train/`` and ``val/`` class folders): see
    :class:`~ipguard_tf.io.imagenet_data.ImageNetData`."""
    if not data_dir:
        raise DataError("ImageNet needs --data-dir: a folder with train/ and val/ (one sub-folder per class)")

    return ImageNetData(data_dir)


LOADERS: Dict[str, Callable[[Optional[str]], Dataset]] = {
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "imagenet": load_imagenet,
}


#: how tables and titles name each dataset
DISPLAY_NAMES: Dict[str, str] = {
    "fashion_mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "imagenet": "ImageNet",
}


def display_name(name: str) -> str:
    """``fashion_mnist`` -> ``Fashion-MNIST`` (an unknown name is returned as it is)."""
    return DISPLAY_NAMES.get(name, name)


def load_dataset(name: str, data_dir: Optional[str] = None) -> Dataset:
    """Load a dataset by name (one of :data:`LOADERS`)."""
    if name not in LOADERS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(sorted(LOADERS))}")
    return LOADERS[name](data_dir)
