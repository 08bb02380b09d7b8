"""The model owner's own examples (issue 30): an ``.npz`` file, a folder of images, or a registered dataset name,
read into the :class:`~ipguard_tf.io.data.Dataset` the rest of the package works with (float32 NHWC in [0, 1]).

Forms accepted by :func:`load_owner_data`:

* a registered dataset name (``fashion_mnist``, ``cifar10``, ``cifar100``): its loader;
* an ``.npz`` file with ``x`` and optionally ``y`` (or ``x_train``/``y_train`` and optionally ``x_test``/``y_test``).
  Images of dtype uint8 are divided by 255; float images must already lie in [0, 1] (the data domain of the
  paper, Section 5.1.4; a model that expects another range is given ``--input-scale``). ``(n, H, W)`` gets a channel
  axis; one-hot labels are turned into class indices;
* a folder of image files (PNG, JPEG, BMP, GIF, WebP), either with one sub-folder per class (labels from the sorted
  sub-folder names, as ``keras.utils.image_dataset_from_directory`` does) or flat (no labels). Images are converted
  to the model's channels (grey or RGB) and resized (bilinear) to the model's input size when it is known.

Without test arrays a seeded tenth of the examples (at least one) is held out as the test split: copies and
negatives are scored on examples they were not tuned or trained on. The paper is silent on the owner's data; this
is our choice. Labels may be absent (``y_train`` None): the data then serves as starting points and for label-free
copies only (no negatives can be trained on it, no accuracy is measured).
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ipguard_tf.core.errors import DataError
from ipguard_tf.io.data import LOADERS, Dataset, load_dataset

log = logging.getLogger(__name__)

#: image file suffixes read from a folder
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
#: fraction of the owner's examples held out as the test split when no test arrays are given (our choice)
HOLDOUT_FRACTION = 0.1


def _as_unit_images(x: np.ndarray, what: str) -> np.ndarray:
    if x.dtype.kind not in "fiu":
        raise DataError(f"{what} must be numeric images, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DataError(f"{what} must have shape (n, H, W[, C]), got {x.shape}")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise DataError(f"{what} contain NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise DataError(
            f"{what} lie in [{lo:.4g}, {hi:.4g}]; give images as uint8 or as floats in [0, 1] "
            "(and --input-scale if the model expects another range)"
        )
    return x


def _as_labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        y = np.argmax(y, axis=1)
    y = y.reshape(-1)
    if y.shape[0] != n:
        raise DataError(f"{what} has {y.shape[0]} labels for {n} examples")
    if y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0)):
        raise DataError(f"{what} must be integer class labels (or one-hot rows), got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise DataError(f"{what} holds negative labels")
    return y


def _split(name: str, x: np.ndarray, y: Optional[np.ndarray], seed: int, num_classes: Optional[int] = None) -> Dataset:
    if len(x) < 2:
        raise DataError(f"{name}: at least 2 examples are needed (one is held out), got {len(x)}")
    order = np.random.default_rng(seed).permutation(len(x))
    held = max(1, int(round(HOLDOUT_FRACTION * len(x))))
    te, tr = order[:held], order[held:]
    classes = num_classes if num_classes is not None else (int(y.max()) + 1 if y is not None and y.size else 0)
    return Dataset(name, x[tr], y[tr] if y is not None else None, x[te], y[te] if y is not None else None, classes)  # type: ignore[arg-type]


def _from_npz(path: Path, seed: int) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"--data {path}: not a readable .npz file ({str(exc).splitlines()[0][:200]})") from None
    if "x" in arrays:
        x = _as_unit_images(arrays["x"], f"{path.name}: x")
        y = _as_labels(arrays["y"], len(x), f"{path.name}: y") if "y" in arrays else None
        return _split(path.stem, x, y, seed)
    if "x_train" in arrays:
        xtr = _as_unit_images(arrays["x_train"], f"{path.name}: x_train")
        ytr = _as_labels(arrays["y_train"], len(xtr), f"{path.name}: y_train") if "y_train" in arrays else None
        if "x_test" not in arrays:
            return _split(path.stem, xtr, ytr, seed)
        xte = _as_unit_images(arrays["x_test"], f"{path.name}: x_test")
        yte = _as_labels(arrays["y_test"], len(xte), f"{path.name}: y_test") if "y_test" in arrays else None
        if (ytr is None) != (yte is None):
            raise DataError(f"{path.name}: give labels for both splits or for neither")
        if xte.shape[1:] != xtr.shape[1:]:
            raise DataError(f"{path.name}: x_test has shape {xte.shape[1:]} per example, x_train {xtr.shape[1:]}")
        classes = int(max(ytr.max(), yte.max())) + 1 if ytr is not None and yte is not None else 0
        return Dataset(path.stem, xtr, ytr, xte, yte, classes)  # type: ignore[arg-type]
    held = sorted(arrays) or "nothing"
    raise DataError(f"--data {path}: the .npz holds {held}; expected x[, y] or x_train[, y_train]")


def _read_image(path: Path, channels: int, size: Optional[Tuple[int, int]]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError  # optional: only for folders of images

    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"cannot read image {path}: {str(exc).splitlines()[0][:200]}") from None
    return a[..., None] if a.ndim == 2 else a


def _from_folder(root: Path, input_shape: Optional[Sequence[Optional[int]]], seed: int) -> Dataset:
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise DataError("reading a folder of images needs Pillow (pip install pillow)") from None
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes:
        files: List[Tuple[Path, Optional[int]]] = [
            (f, label)
            for label, d in enumerate(classes)
            for f in sorted(d.iterdir())
            if f.suffix.lower() in IMAGE_SUFFIXES
        ]
    else:
        files = [(f, None) for f in sorted(root.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"--data {root}: no image files ({', '.join(IMAGE_SUFFIXES)}) in it or its sub-folders")
    shape = tuple(input_shape) if input_shape is not None else None
    channels = int(shape[-1]) if shape and len(shape) == 3 and shape[-1] else 3
    size = (int(shape[0]), int(shape[1])) if shape and len(shape) == 3 and shape[0] and shape[1] else None
    images = [_read_image(f, channels, size) for f, _ in files]
    if len({a.shape for a in images}) > 1:
        raise DataError(f"--data {root}: images differ in size and the model's input size is unknown")
    x = np.stack(images).astype(np.float32) / 255.0
    y = np.array([lab for _, lab in files], dtype=np.int64) if classes else None
    log.info("read %d images from %s (%s)", len(x), root, f"{len(classes)} classes" if classes else "no labels")
    return _split(root.name, x, y, seed, num_classes=len(classes) if classes else None)


def load_owner_data(
    spec: str,
    *,
    input_shape: Optional[Sequence[Optional[int]]] = None,
    data_dir: Optional[str] = None,
    seed: int = 0,
) -> Dataset:
    """The owner's examples named by ``spec`` (see the module docstring); ``input_shape`` (H, W, C) is the model's,
    used to read image folders and to check the examples' shape. A problem is a one-line :class:`DataError`."""
    if spec in LOADERS:
        if spec == "imagenet":
            raise DataError("--data imagenet: give a folder of images (one sub-folder per class) instead")
        ds = load_dataset(spec, data_dir)
    else:
        p = Path(spec)
        if not p.exists():
            raise DataError(
                f"--data {spec}: no such file or folder, and not a dataset name "
                f"({', '.join(k for k in LOADERS if k != 'imagenet')})"
            )
        if p.is_dir():
            ds = _from_folder(p, input_shape, seed)
        elif p.suffix.lower() == ".npz":
            ds = _from_npz(p, seed)
        else:
            raise DataError(f"--data {spec}: expected an .npz file, a folder of images or a dataset name")
    if input_shape is not None:
        exp = tuple(input_shape)
        got = tuple(ds.x_train.shape[1:])
        if len(exp) != len(got) or any(e is not None and e != g for e, g in zip(exp, got)):
            raise DataError(f"--data {spec}: examples have shape {got} but the model expects {exp}")
    return ds
