"""Random-forest suspects (paper Section 5.1.2: scikit-learn defaults with 20 trees) on flattened pixels,
stored with skops (loading cannot run code: only an allow-list of scikit-learn types is accepted)."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np

from ipguard_tf.io.files import atomic_write_bytes
from ipguard_tf.models.safety import load_skops

N_TREES = 20


def train_forest(dataset, seed: int, n_estimators: int = N_TREES, n_jobs: int = -1):
    """A RandomForestClassifier (20 trees, otherwise scikit-learn defaults) on flattened training images."""
    from sklearn.ensemble import RandomForestClassifier

    rf = RandomForestClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=n_jobs)
    rf.fit(dataset.x_train.reshape(len(dataset.x_train), -1), dataset.y_train)
    rf.set_params(n_jobs=1)
    return rf


def save_forest(rf, path: Union[str, Path]) -> None:
    import skops.io as sio

    atomic_write_bytes(path, sio.dumps(rf))


#: skops files are loaded by :func:`ipguard_tf.models.safety.load_skops` (types outside scikit-learn/NumPy refused)
load_forest = load_skops


def forest_accuracy(rf, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(rf.predict(x.reshape(len(x), -1)) == y))
