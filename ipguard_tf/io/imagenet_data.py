"""ImageNet images (paper Section 5.1.1): a sample of a class-folder tree (ILSVRC2012 layout) in [0, 1], and
:class:`ImageNetData`, the dataset the zoo builder trains and evaluates on (training streamed with ``tf.data``).
The ImageNet models themselves are in :mod:`ipguard_tf.models.imagenet`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np

from ipguard_tf.core.errors import DataError


# -- data -----------------------------------------------------------------------------------------------------------
def load_imagenet_images(
    directory: Union[str, Path], n: int, seed: int = 0, size: int = 224, with_labels: bool = False
):
    """``n`` random images from an ImageNet folder (class sub-folders, ILSVRC2012 layout; classes in sorted
    synset order, which is Keras' class index), resized to ``size``, as float32 in [0, 1]."""
    import keras

    d = Path(directory)
    if not d.is_dir():
        raise DataError(f"ImageNet folder {d} does not exist")
    try:
        ds = keras.utils.image_dataset_from_directory(
            str(d),
            labels="inferred",
            label_mode="int",
            image_size=(size, size),
            batch_size=min(n, 64),
            shuffle=True,
            seed=seed,
            interpolation="bilinear",
            verbose=False,
        )
    except ValueError as exc:
        raise DataError(f"{d}: {exc}") from None
    xs, ys, got = [], [], 0
    for xb, yb in ds:
        xs.append(xb.numpy() / 255.0)
        ys.append(yb.numpy())
        got += len(xb)
        if got >= n:
            break
    x = np.concatenate(xs)[:n].astype(np.float32)
    y = np.concatenate(ys)[:n].astype(np.int64)
    return (x, y) if with_labels else x


class ImageNetData:
    """ImageNet for the zoo (paper Section 5.1.2): ``root/train`` and ``root/val`` folders with one sub-folder per
    class (ILSVRC2012 layout, synset names; sorted, they give Keras' class indices). Training is streamed with
    ``tf.data`` (:meth:`train_dataset`); the test split used for the 3 % accuracy rule and Table 2 is the first
    ``val_images`` validation images of a seeded shuffle, held in memory (2,000 by default: 1.2 GB)."""

    name = "imagenet"
    input_shape = (224, 224, 3)
    num_classes = 1000

    def __init__(self, root: Union[str, Path], val_images: int = 2000, seed: int = 0) -> None:
        self.root = Path(root)
        self.train_dir, self.val_dir = self.root / "train", self.root / "val"
        for d in (self.train_dir, self.val_dir):
            if not d.is_dir():
                raise DataError(
                    f"ImageNet folder {d} does not exist (expected {self.root}/train and "
                    f"{self.root}/val with one sub-folder per class)"
                )
        exts = (".jpeg", ".jpg", ".png", ".JPEG", ".JPG", ".PNG")
        self.num_train = sum(1 for p in self.train_dir.rglob("*") if p.suffix in exts)
        self.val_images, self.seed = int(val_images), int(seed)
        self._test = None

    def train_dataset(self, batch_size: int, seed: int = 0):
        import keras
        import tensorflow as tf

        ds = keras.utils.image_dataset_from_directory(
            str(self.train_dir),
            labels="inferred",
            label_mode="int",
            image_size=(224, 224),
            batch_size=batch_size,
            shuffle=True,
            seed=seed,
            interpolation="bilinear",
            verbose=False,
        )
        return ds.map(lambda x, y: (x / 255.0, y), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    def _load_test(self):
        if self._test is None:
            self._test = load_imagenet_images(self.val_dir, self.val_images, self.seed, with_labels=True)
        return self._test

    @property
    def x_test(self) -> np.ndarray:
        return self._load_test()[0]

    @property
    def y_test(self) -> np.ndarray:
        return self._load_test()[1]

    @property
    def x_train(self) -> np.ndarray:
        raise DataError("ImageNet training images are streamed (train_dataset); use load_imagenet_images for a sample")

    def sample_train(self, n: int, seed: int = 0) -> np.ndarray:
        """n random training images in [0, 1] (the -T initialisation)."""
        return load_imagenet_images(self.train_dir, n, seed)
