"""SAC-m and SAC-w (Guan, Liang, He, "Are You Stealing My Model? Sample Correlation for Fingerprinting Deep
Neural Networks", NeurIPS 2022; appendix in ``../shared/papers/003_*``; official code github guanjiyang/SAC):
fingerprints by the *correlation* of a model's outputs on a set of samples, verified by
:func:`~ipguard_tf.core.statistics.sac_distance` (lower = more likely a copy;
:data:`~ipguard_tf.core.statistics.SAC_DISTANCE`).

**SAC-m** (``cut_mix.py``): N = 100 images (drawn with the seed from the data given to ``generate``), mixed by
CutMix: one patch, the same for all N, of side ``int(0.2 W)`` (clipped at the border), centred at a point drawn
uniformly until it lies outside the middle band (W/6, 5W/6) in both coordinates (a corner zone), is pasted into
every image from another image of the set (a random permutation of the unmixed images). Which images are mixed
is the caller's choice: the official script mixes the first batch of 100 CIFAR-10 *test* images (``cut_mix.py``
lines 17-18 and 63-82), held out from every model it compares. The official script also *transposes* H and W
when it converts its NCHW batch to the NHWC file (``imgs.transpose(1, 3)`` instead of a permutation to
(0, 2, 3, 1)), so its models see mirrored-about-the-diagonal images; ``transpose=False`` is the default and
``transpose=True`` reproduces the official samples (``correlation_wrong.py`` lines 132-138 name a SAC-m file
"with flip" and one "without flip"; which one the paper's numbers come from is not stated).

**SAC-w**: N owner examples the target misclassifies (needs their labels: ``generate(..., train_y=...)``), drawn
with the seed. The official ``correlation_wrong.py`` loads its SAC-w samples from ``dataset_common.h5`` (lines
128-130), a data file not in its repository, and lists the source's wrong samples (``source_wrong_final.h5``)
separately as "SAC-source" (lines 144-146); what ``dataset_common.h5`` holds is not in the code, so SAC-w here
is the source's misclassified examples, not a copy of that file.

The fingerprint file holds the samples, the target's labels and the target's logits at them (``outputs``):
verification correlates the suspect's outputs with those (logits with logits; probabilities with the target's
softmax when the suspect only gives probabilities, see :func:`~ipguard_tf.core.statistics.comparable_outputs`).
Nothing is searched: iterations 0, every sample "converged", ``source`` = ``target`` = the target's label.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ipguard_tf.core.constants import SAC_CENTRE_BAND
from ipguard_tf.core.errors import DataError, ModelError
from ipguard_tf.methods.base import FingerprintMethod, SearchOutput
from ipguard_tf.models.classifier import Classifier


def cutmix_box(height: int, width: int, patch: float, rng: np.random.Generator) -> Tuple[int, int, int, int]:
    """(top, bottom, left, right) of SAC's CutMix patch (``cut_mix.py``'s ``rand_bbox``, rows = its first
    spatial axis): side ``int(dim * patch)``, centre redrawn while inside the middle band in either axis."""
    lo, hi = SAC_CENTRE_BAND
    ch, cw = int(height * patch), int(width * patch)
    while True:
        cy, cx = int(rng.integers(height)), int(rng.integers(width))
        if not (lo * height < cy < hi * height or lo * width < cx < hi * width):
            break
    return (
        int(np.clip(cy - ch // 2, 0, height)),
        int(np.clip(cy + ch // 2, 0, height)),
        int(np.clip(cx - cw // 2, 0, width)),
        int(np.clip(cx + cw // 2, 0, width)),
    )


def cutmix_samples(images: np.ndarray, patch: float, rng: np.random.Generator, transpose: bool = False) -> np.ndarray:
    """SAC-m's samples from ``images`` (NHWC in [0, 1]): one CutMix box for all, each image's box filled from
    the image a random permutation assigns it; ``transpose`` swaps H and W as the official files do."""
    n, h, w = images.shape[:3]
    donors = rng.permutation(n)
    top, bottom, left, right = cutmix_box(h, w, patch, rng)
    out = np.array(images, np.float32, copy=True)
    out[:, top:bottom, left:right] = images[donors, top:bottom, left:right]
    if transpose:
        if h != w:
            raise DataError(f"transpose needs square images, got {h}x{w}")
        out = np.ascontiguousarray(out.transpose(0, 2, 1, 3))
    return out


class _SAC(FingerprintMethod):
    """Shared by SAC-m and SAC-w: no search; the samples are the initial points, labelled by the target."""

    def target_labels(self, logits0: np.ndarray, src: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return src.copy()  # nothing is targeted

    def _search(self, clf, plan, x0, src, tgt, *, checkpoint=None) -> SearchOutput:
        n = len(x0)
        return SearchOutput(
            x=x0, iterations=np.zeros(n, np.int64), objective=np.full(n, np.nan, np.float32), converged=np.ones(n, bool)
        )

    @staticmethod
    def _owner_data(clf: Classifier, train_x: Optional[np.ndarray], what: str) -> np.ndarray:
        if train_x is None or len(train_x) == 0:
            raise DataError(f"{what} needs the owner's data (give --dataset, or train_x to generate)")
        return np.asarray(train_x)


class SACm(_SAC):
    """SAC-m: N CutMix samples of the owner's data (see the module docstring). Hyperparameters (registry):
    ``patch`` (0.2), ``transpose`` (False), ``seed``, ``batch_size``."""

    name = "sac-m"
    patch: float
    transpose: bool

    @property
    def strategy(self) -> str:
        return "cutmix-transposed" if self.transpose else "cutmix"

    def initial_points(
        self,
        clf: Classifier,
        n: int,
        train_x: Optional[np.ndarray],
        rng: np.random.Generator,
        train_y: Optional[np.ndarray] = None,
    ) -> np.ndarray:
        x = self._owner_data(clf, train_x, "SAC-m")
        idx = rng.choice(len(x), size=n, replace=n > len(x))
        images = clf.check_inputs(x[idx], "owner images")
        return cutmix_samples(images, self.patch, rng, self.transpose)


class SACw(_SAC):
    """SAC-w: N owner examples the target misclassifies (see the module docstring)."""

    name = "sac-w"

    @property
    def strategy(self) -> str:
        return "wrong"

    def initial_points(
        self,
        clf: Classifier,
        n: int,
        train_x: Optional[np.ndarray],
        rng: np.random.Generator,
        train_y: Optional[np.ndarray] = None,
    ) -> np.ndarray:
        x = self._owner_data(clf, train_x, "SAC-w")
        if train_y is None or len(train_y) != len(x):
            raise DataError("SAC-w needs the labels of the owner's data (train_y) to find misclassified examples")
        wrong = np.flatnonzero(clf.predict_labels(x) != np.asarray(train_y).reshape(-1))
        if len(wrong) < n:
            raise ModelError(
                f"the model misclassifies {len(wrong)} of the {len(x)} examples given; SAC-w needs "
                f"n = {n} (give a smaller --n or more data)"
            )
        return clf.check_inputs(x[rng.choice(wrong, size=n, replace=False)], "owner images").copy()
