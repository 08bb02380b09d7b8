"""AKH (Godinot, Le Merrer, Penzo, Taiani, Tredan, "Queries, Representation & Detection: The Next 100 Model
Fingerprinting Schemes", AAAI 2025, arXiv 2412.13021; official code github grodino/QuRD, read at commit fcfe7d8): a
scheme of the paper's queries x representation x detection grid, reported there on par with the best fingerprints on
SACBench.

* **Queries**: n inputs the target misclassifies, drawn at random among the owner's examples whose true label the
  target gets wrong (QuRD ``qurd/fingerprint/fingerprints.py``, ``make_fingerprint("AKH")``:
  ``RandomNegativeQueries``; ``queries.py``: ``find_negatives`` walks a shuffled loader and keeps the examples
  with ``pred != label``, then the first ``budget`` of them).
* **Representation**: the target's hard labels at the queries (``representation.py``: ``HardLabels``), stored as the
  fingerprint's ``y``; not the true labels, which the target gets wrong there by construction.
* **Detection**: label agreement, the matching rate of the suspect's labels with the target's
  (:data:`~ipguard_tf.core.statistics.MATCHING_RATE`, higher = copy; QuRD's ``distance.py`` ``hamming`` is
  1 minus it).

The samples are chosen as SAC-w's are (:class:`~ipguard_tf.methods.sac.SACw`; SAC's ``source_wrong``); AKH differs in
what is compared: labels, not the correlation of the outputs. Nothing is searched (iterations 0, every point
"converged", ``source`` = ``target`` = the target's label), so a fingerprint is replayed from the seed and the
owner's data (``ipguard audit``).

Where QuRD and this implementation differ, or QuRD is silent (each a choice, made before any measurement):

* **Which data.** QuRD draws from the benchmark's *test* split (``Experiment.scores`` calls
  ``benchmark.dataset(name)``, whose ``split`` defaults to ``"test"``). Here the examples are those given to
  :meth:`~ipguard_tf.methods.base.FingerprintMethod.generate` with their labels (``train_x``, ``train_y``), the
  owner's data as for SAC-w: ``ipguard extract --dataset``/``--data`` (which may be held-out data with labels),
  a sweep's training split, or the SAC zoo's defender half. (The results QuRD's history once committed,
  ``generated/.../Negative-{train,test}-*``, ran both splits.) A model misclassifies fewer of its training
  examples than of held-out ones; n must not exceed how many it gets wrong.
* **How many.** n is the caller's (default :data:`~ipguard_tf.core.constants.N_POINTS` = 100, a sweep's ``n``);
  QuRD calls it the budget (its CLI default is 10; those committed results run 10 to 400).
* **Shared samples.** For the same seed, data and labels AKH's points are SAC-w's (the same draw), as in QuRD, where
  AKH and SAC share the sampler and its cached queries (``fingerprints.py``, ``experiments.py``): the two differ
  only in what is compared.
* **Too few.** QuRD fills the budget, when the whole data set holds fewer misclassified examples, with CutMix
  copies of them (one box for the batch, area ratio from Beta(1, 1), each image's box taken from the previous
  image: torchvision's ``v2.CutMix``) and their left-right and upside-down flips, round after round
  (``RandomNegativeQueries.sample`` with ``augment=True``). Here that is ``augment=True`` (``--akh-augment``); by
  default (:data:`~ipguard_tf.core.constants.AKH_AUGMENT`) too few misclassified examples is a one-line
  :class:`~ipguard_tf.core.errors.ModelError`, so that every point is an input the target itself gets wrong.
* **Randomness.** The draw is uniform without replacement with this project's seeded generator, the same
  distribution as QuRD's shuffled loader; the points differ from QuRD's for the same data.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ipguard_tf.core.constants import AKH_COPIES_PER_ROUND, AKH_CUTMIX_ALPHA
from ipguard_tf.core.errors import DataError, ModelError
from ipguard_tf.methods.sac import _SAC
from ipguard_tf.models.classifier import Classifier


def misclassified(clf: Classifier, x: np.ndarray, y: Optional[np.ndarray], what: str) -> np.ndarray:
    """Indices of the examples ``x`` whose label ``y`` the classifier gets wrong; :class:`DataError` when the labels
    are missing or do not match the examples."""
    if y is None or len(y) != len(x):
        raise DataError(f"{what} needs the labels of the owner's data (train_y) to find the misclassified examples")
    return np.flatnonzero(clf.predict_labels(x) != np.asarray(y).reshape(-1))


def cutmix_roll(images: np.ndarray, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """One CutMix of a batch (NHWC) as torchvision's ``v2.CutMix``, which QuRD's AKH uses: ratio lam ~
    Beta(alpha, alpha), one box for the whole batch of half-sides ``int(0.5 sqrt(1 - lam) * side)`` around a
    uniform centre (clipped at the border), each image's box filled from the previous image of the batch."""
    n, h, w = images.shape[:3]
    lam = float(rng.beta(alpha, alpha))
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    r = 0.5 * math.sqrt(1.0 - lam)
    hh, hw = int(r * h), int(r * w)
    top, bottom, left, right = max(cy - hh, 0), min(cy + hh, h), max(cx - hw, 0), min(cx + hw, w)
    out = np.array(images, np.float32, copy=True)
    out[:, top:bottom, left:right] = np.roll(images, 1, axis=0)[:, top:bottom, left:right]
    return out


def fill_with_cutmix(wrong: np.ndarray, n: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """QuRD's AKH fallback: the misclassified ``wrong`` (in their order), then rounds of a CutMix of them
    (:func:`cutmix_roll`) with its left-right and upside-down flips, cut at ``n``."""
    k = len(wrong)
    rounds = math.ceil((n - k) / (k * AKH_COPIES_PER_ROUND))
    parts = [wrong]
    for _ in range(rounds):
        mixed = cutmix_roll(wrong, alpha, rng)
        parts += [mixed, mixed[:, :, ::-1], mixed[:, ::-1]]
    return np.ascontiguousarray(np.concatenate(parts)[:n], np.float32)


class AKH(_SAC):
    """AKH: n owner examples the target misclassifies, verified by label agreement (see the module docstring).
    Hyperparameters (registry): ``augment`` (False: too few misclassified examples is an error), ``seed``,
    ``batch_size``."""

    name = "akh"
    augment: bool

    @property
    def strategy(self) -> str:
        return "wrong+cutmix" if self.augment else "wrong"

    def initial_points(
        self,
        clf: Classifier,
        n: int,
        train_x: Optional[np.ndarray],
        rng: np.random.Generator,
        train_y: Optional[np.ndarray] = None,
    ) -> np.ndarray:
        x = self._owner_data(clf, train_x, "AKH")
        wrong = misclassified(clf, x, train_y, "AKH")
        if len(wrong) >= n:
            return clf.check_inputs(x[rng.choice(wrong, size=n, replace=False)], "owner images").copy()
        if not self.augment or len(wrong) == 0:
            fix = (
                "more data"
                if len(wrong) == 0
                else "a smaller --n, more data" + ("" if self.augment else " or --akh-augment")
            )
            raise ModelError(
                f"the model misclassifies {len(wrong)} of the {len(x)} examples given; AKH needs n = {n} (give {fix})"
            )
        images = clf.check_inputs(x[rng.permutation(wrong)], "owner images")
        return fill_with_cutmix(images, n, AKH_CUTMIX_ALPHA, rng)
