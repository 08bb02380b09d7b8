"""The SAC Fashion-MNIST zoo (issue 14): the setting of the SAC paper's appendix Table 3 (Guan, Liang, He,
NeurIPS 2022; ``../shared/papers/003_*``), built with :mod:`ipguard_tf.zoo.stealing`.

**Data** (:func:`sac_split`): Fashion-MNIST's 60,000 training images are permuted with a seed and split into a
*defender* half (the source model's training data) and an *attacker* half (the thief's data: queried for
extraction, and with true labels for fine-tuning, pruning, transfer and the irrelevant models), as SAC's code
trains its attacks on a separate ``dataset_attack`` file. The test set measures accuracy and agreement. The
split's seed and the SHA-256 of its index arrays are recorded in the manifest.

**Source**: a VGG16 with batch norm, as SAC's source (torchvision ``vgg16_bn``), width-reduced for this CPU
(:data:`~ipguard_tf.zoo.architectures.SAC_ARCHITECTURES`). Source and irrelevant models are trained with the
students' SGD recipe (SAC publishes no training code for them): lr 0.05, momentum 0.9, weight decay 5e-4, cosine,
batch 512, so that students and irrelevant models differ only in their labels.

**Members** (role, family): the source (target); Extract-L, Extract-P, Extract-Adv students of each student
family (positive); Finetune-A, Finetune-L; fine-pruning snapshots (every 5 % of the conv channels up to 50 %, each
fine-tuned after pruning: :func:`~ipguard_tf.zoo.stealing.finetune_pruned`);
Transfer-A and Transfer-L to a coarse 4-class label set (:data:`COARSE_LABELS`, with ``labels`` recorded: a
fingerprint of the 10 classes cannot be checked on them, so zoo verification skips them with a note);
adversarial fine-tuning; TFLite float16 and int8 copies of the source; irrelevant models (negative) of each
student family trained on the attacker half with true labels, and irrelevant models of the transfer task
(``irrelevant_transfer``: the same on the coarse labels, what SAC compares its transfer copies with); and CAE's
defender ensemble (roles ``surrogate`` and ``reference``, on the *defender* half, no suspects: :func:`cae_plan`).
Every record holds the test accuracy, the agreement with the source on the test set and, for extraction, the
queries the thief used.

**Utility floor** (issue 31): a stolen model of any family whose test accuracy is more than
:data:`~ipguard_tf.core.constants.STOLEN_MAX_ACCURACY_DROP` (10 points) below the source's is no copy a thief
would deploy: it is recorded in the manifest's ``rejected`` with its accuracy and never stored nor counted
(:meth:`SACZooBuilder.accuracy_floor`; the manifest's ``accuracy_floor``, which
:func:`~ipguard_tf.evaluation.sweep.check_accuracy_floor` enforces when a zoo's suspects are loaded).

Epochs are scaled to this machine per profile (:data:`SAC_PROFILES`; SAC: 200 for extraction, 30 for
fine-tuning) and recorded in each member's parameters.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ipguard_tf.core.constants import STOLEN_MAX_ACCURACY_DROP
from ipguard_tf.core.errors import ParameterError
from ipguard_tf.models.classifier import as_classifier
from ipguard_tf.models.oracle import Oracle
from ipguard_tf.zoo import stealing as S
from ipguard_tf.zoo.architectures import build_architecture
from ipguard_tf.zoo.builder import MAKERS, PlannedMember, ZooBuilder, maker_of, quantized_records
from ipguard_tf.zoo.stealing import PGD_STEPS, conv_layers
from ipguard_tf.zoo.store import ZooError, members
from ipguard_tf.zoo.train import SGDRecipe, _ce_loss, augmentation, deterministic, sgd_train

log = logging.getLogger(__name__)

#: seed of the defender/attacker split
SAC_SPLIT_SEED = 0
#: Transfer-A/L label set: Fashion-MNIST's 10 classes grouped into 4 (tops: T-shirt, pullover, coat, shirt;
#: trouser and dress; footwear: sandal, sneaker, ankle boot; bag). SAC Table 5 transfers CIFAR-10 to 10
#: CIFAR-100 classes; no second 28x28 dataset is available offline here, so the new task is a relabelling.
COARSE_LABELS = np.array([0, 1, 0, 1, 0, 2, 0, 2, 3, 2], np.int64)
COARSE_NAME = "fashion_mnist_coarse4"


def _pgd_steps() -> int:

    return PGD_STEPS


@dataclass(frozen=True)
class SACProfile:
    """Counts and epochs of a SAC zoo (SAC: 5 students of each of 4 families, 200 extraction epochs)."""

    name: str
    students: Tuple[str, ...] = ("sac_vgg13", "sac_resnet18", "sac_mobilenet_v2")
    source: str = "sac_vgg16"
    seeds: int = 1
    source_epochs: int = 20
    extract_epochs: int = 10
    adv_epochs: int = 1
    #: examples per epoch of the PGD trainings (Extract-Adv, adversarial fine-tuning); None: all (SAC)
    adv_examples: Optional[int] = 10000
    finetune_epochs: int = 5
    #: Finetune-A and Finetune-L models each (seeds 1..n, named ``finetune_a_s1``...; one: ``finetune_a``, seed 0)
    finetune_seeds: int = 1
    transfer_epochs: int = 3
    #: Transfer-A and Transfer-L models each (as ``finetune_seeds``)
    transfer_seeds: int = 1
    adv_finetune_epochs: int = 1
    irrelevant_epochs: int = 10
    #: irrelevant models (negatives), cycling through ``students`` (SAC's table has about as many as one attack's
    #: stolen models; 10 gives an AUC of 10 pruned copies 100 comparisons)
    irrelevant: int = 10
    #: irrelevant models of the transfer task (SAC compares its transfer copies with models trained on the new
    #: task, ``correlation_wrong.py``): architectures cycling through ``students``, trained from seed on the
    #: attacker half's coarse labels with the irrelevant models' recipe (family ``irrelevant_transfer``)
    irrelevant_transfer: int = 3
    prune_snapshots: int = 20
    #: snapshots up to this fraction of the conv channels pruned: SAC's Pruning row takes them up to 50 %
    #: (:data:`~ipguard_tf.evaluation.report.SAC_PRUNING_MAX_FRACTION`); its code prunes on to 80 %
    prune_max: float = 0.5
    #: epochs of fine-tuning each snapshot after pruning (:func:`~ipguard_tf.zoo.stealing.finetune_pruned`;
    #: 0: none, the snapshot as SAC's code saves it); the profile's fine-tuning epochs
    prune_finetune_epochs: int = 5
    #: a stolen model more than this below the source's test accuracy is rejected (:meth:`SACZooBuilder.accuracy_floor`)
    max_accuracy_drop: float = STOLEN_MAX_ACCURACY_DROP
    #: PGD steps of Extract-Adv and adversarial fine-tuning (SAC: 30, ``stealing.PGD_STEPS``)
    pgd_steps: int = field(default_factory=lambda: _pgd_steps())
    #: CAE's defender ensemble (Lukas et al., ICLR 2021): this many surrogates (Extract-L students of the source
    #: on the defender's half) and as many references (trained on its true labels), cycling through
    #: ``cae_architectures``; not suspects (roles ``surrogate`` / ``reference``). See :func:`plan`.
    cae_members: int = 3
    cae_architectures: Tuple[str, ...] = ("sac_vgg13",)
    #: the attacker's batch augmentation (:data:`~ipguard_tf.zoo.train.AUGMENTATIONS`): SAC's attacker loaders crop
    #: with zero padding 4 and flip (``dataset.py``), and its thieves ask the victim about every augmented batch;
    #: used by the extraction attacks, fine-tuning, fine-pruning and CAE's surrogates (which copy the thief's
    #: Extract-L), not by the attacks SAC publishes no code for (transfer, adversarial fine-tuning) nor by the
    #: models trained from seed. None: none (the zoo as built before issue 31's last fix)
    attacker_augment: Optional[str] = "crop4zero+flip"
    #: tests: use only this many examples of each part (None: all)
    subset: Optional[int] = None

    def as_dict(self) -> dict:
        return asdict(self)


#: SAC's counts and epochs (4 student families x 5 seeds, 200 extraction epochs)
_PAPER = SACProfile(
    "paper",
    students=("sac_vgg13", "sac_resnet18", "sac_densenet", "sac_mobilenet_v2"),
    seeds=5,
    source_epochs=30,
    extract_epochs=200,
    adv_epochs=2,
    adv_examples=None,
    finetune_epochs=30,
    transfer_epochs=10,
    adv_finetune_epochs=2,
    irrelevant_epochs=200,
    irrelevant=20,
    irrelevant_transfer=4,
    prune_finetune_epochs=30,
    cae_members=18,
    cae_architectures=("sac_vgg13", "sac_resnet18", "sac_densenet", "sac_mobilenet_v2"),
)

#: quick: what CI and this 2-core machine use (about 4 CPU-hours by :func:`estimate_seconds`; each member's measured
#: build time is in the zoo's manifest); full: SACBench's counts; paper: SAC's counts and epochs
SAC_PROFILES: Dict[str, SACProfile] = {
    "quick": SACProfile("quick"),
    # SACBench (the benchmark QuRD and later work evaluate on): 30 irrelevant models, 10 fine-tuned, 10 fine-pruned,
    # 20 transfer-learned and 20 each of label, probability and adversarial extraction (4 student families x 5
    # seeds), at SAC's epochs: a cluster's or a GPU machine's work (`ipguard zoo build --kind sac --profile full
    # --ray ADDRESS`); the estimate printed before it starts is in CPU-hours of the 2-core reference machine
    "full": replace(_PAPER, name="full", finetune_seeds=5, transfer_seeds=10, irrelevant=30, irrelevant_transfer=10),
    "paper": _PAPER,
}


@dataclass(frozen=True)
class Part:
    """One part of the split: images in [0, 1] and their true labels."""

    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class SACData:
    defender: Part
    attacker: Part
    test: Part
    seed: int
    indices_sha256: str = field(default="")

    def part(self, name: str) -> Part:
        if name not in ("defender", "attacker"):
            raise ParameterError(f"data part must be defender or attacker, got {name!r}")
        return getattr(self, name)


def sac_split(dataset, seed: int = SAC_SPLIT_SEED, subset: Optional[int] = None) -> SACData:
    """Split ``dataset``'s training set into defender and attacker halves (a seeded permutation); ``subset``
    keeps only the first ``subset`` examples of each half and of the test set (tests)."""
    n = len(dataset.x_train)
    perm = np.random.default_rng(seed).permutation(n)
    d_idx, a_idx = np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])
    if subset is not None:
        d_idx, a_idx = d_idx[:subset], a_idx[:subset]
    h = hashlib.sha256()
    h.update(d_idx.astype(np.int64).tobytes())
    h.update(a_idx.astype(np.int64).tobytes())
    t = slice(None) if subset is None else slice(0, subset)
    return SACData(
        Part(dataset.x_train[d_idx], dataset.y_train[d_idx]),
        Part(dataset.x_train[a_idx], dataset.y_train[a_idx]),
        Part(dataset.x_test[t], dataset.y_test[t]),
        seed,
        h.hexdigest(),
    )


# -- makers: one per family, (builder, record) -> (model, fields to record) -------------------------------------
def _recipe(rec: Dict[str, Any]):

    return SGDRecipe(**rec["params"]["recipe"])


def _arch(b, name: str, num_classes: Optional[int] = None):

    ds = b._data()
    return lambda: build_architecture(name, ds.input_shape, num_classes or ds.num_classes)


def make_trained(b, rec: Dict[str, Any]):
    """Source and irrelevant models: ``architecture`` trained from seed on a part's true labels (the coarse ones
    for a record whose ``labels`` are :data:`COARSE_NAME`)."""

    part = b.split().part(rec["data"])
    coarse = rec.get("labels") == COARSE_NAME
    deterministic(rec["seed"])
    model = _arch(b, rec["architecture"], int(COARSE_LABELS.max()) + 1 if coarse else None)()
    sgd_train(
        model,
        part.x,
        (COARSE_LABELS[part.y] if coarse else part.y).astype(np.int64),
        _ce_loss,
        _recipe(rec),
        seed=rec["seed"],
        desc=rec.get("name", rec["family"]),
        progress=b.verbose > 0,
    )
    return model, {}


def _oracle(b, output: str = "labels"):

    return Oracle(b._get("target"), output=output)


def make_extract(b, rec: Dict[str, Any]):
    """Extract-L / Extract-P students of ``architecture`` from the source's labels / probabilities (on the
    record's part of the data: the attacker's half for a thief, the defender's for CAE's surrogates)."""

    x = b.split().part(rec["data"]).x
    if rec["family"] in ("extract_l", "cae_surrogate"):
        model, info = S.extract_labels(
            _oracle(b),
            x,
            _arch(b, rec["architecture"]),
            recipe=_recipe(rec),
            augment=rec["params"].get("augment"),
            seed=rec["seed"],
            progress=b.verbose > 0,
        )
    else:
        p = rec["params"]
        model, info = S.extract_probabilities(
            _oracle(b, "probabilities"),
            x,
            _arch(b, rec["architecture"]),
            recipe=_recipe(rec),
            temperature=p["temperature"],
            alpha=p["alpha"],
            augment=p.get("augment"),
            seed=rec["seed"],
            progress=b.verbose > 0,
        )
    return model, {"queries": info["queries"]}


def make_extract_adv(b, rec: Dict[str, Any]):
    """Extract-Adv: the recorded Extract-L student trained further on PGD examples; without augmentation the thief
    reuses the labels that student was trained on (asked again of the source here, the same answers; counted as
    that student's), with it the victim labels each augmented batch (SAC ``model_extract_adv.py``)."""

    p = rec["params"]
    x = b.split().attacker.x
    oracle = _oracle(b)
    labels = None if p.get("augment") else oracle.labels(x)
    model, info = S.extract_adversarial(
        oracle,
        x,
        b._get(p["student"]),
        labels=labels,
        recipe=_recipe(rec),
        epsilon=p["epsilon"],
        step=p["step"],
        steps=p["steps"],
        max_examples=p.get("max_examples"),
        augment=p.get("augment"),
        seed=rec["seed"],
        progress=b.verbose > 0,
    )
    return model, {"queries": len(x) if labels is not None else info["queries"]}


def make_finetune(b, rec: Dict[str, Any]):

    a = b.split().attacker
    return S.finetune(
        b._get("target"),
        a.x,
        a.y,
        last_only=rec["family"] == "finetune_l",
        recipe=_recipe(rec),
        augment=rec["params"].get("augment"),
        seed=rec["seed"],
        progress=b.verbose > 0,
    ), {}


def make_adv_finetune(b, rec: Dict[str, Any]):

    a, p = b.split().attacker, rec["params"]
    return S.adversarial_finetune(
        b._get("target"),
        a.x,
        a.y,
        recipe=_recipe(rec),
        epsilon=p["epsilon"],
        step=p["step"],
        steps=p["steps"],
        max_examples=p.get("max_examples"),
        seed=rec["seed"],
        progress=b.verbose > 0,
    ), {}


def make_transfer(b, rec: Dict[str, Any]):

    a = b.split().attacker
    model = S.transfer(
        b._get("target"),
        a.x,
        COARSE_LABELS[a.y],
        int(COARSE_LABELS.max()) + 1,
        last_only=rec["family"] == "transfer_l",
        recipe=_recipe(rec),
        seed=rec["seed"],
        progress=b.verbose > 0,
    )
    return model, {}


def make_prune(b, rec: Dict[str, Any]):
    """One fine-pruning snapshot; the pruning run (one for all snapshots) is kept by the builder meanwhile."""

    p = dict(rec["params"])
    index = p.pop("snapshot")
    after = p.pop("finetune_after", None)
    key = ("prune", rec["seed"], tuple(sorted(p.items())))
    a = b.split().attacker
    if key not in b._runs:
        b._runs[key] = S.fine_prune(b._get("target"), a.x, a.y, seed=rec["seed"], progress=b.verbose > 0, **p)
    snaps = b._runs[key]
    if index >= len(snaps):
        raise ParameterError(f"fine-pruning made {len(snaps)} snapshots; no snapshot {index}")
    fraction, model = snaps[index]
    if after is not None:
        model = S.finetune_pruned(
            model,
            a.x,
            a.y,
            recipe=SGDRecipe(**after),
            augment=p.get("augment"),
            seed=rec["seed"] + index,
            progress=b.verbose > 0,
        )
    return model, {"pruned_fraction": fraction}


SAC_MAKERS = {
    "sac_trained": make_trained,
    "extract_l": make_extract,
    "cae_surrogate": make_extract,
    "extract_p": make_extract,
    "extract_adv": make_extract_adv,
    "finetune_a": make_finetune,
    "finetune_l": make_finetune,
    "prune": make_prune,
    "transfer_a": make_transfer,
    "transfer_l": make_transfer,
    "adv_finetune": make_adv_finetune,
}


def _conv_channels(architecture: str) -> int:
    """Conv channels of an architecture on 28x28x1 Fashion-MNIST (what fine-pruning ranks)."""

    return int(sum(int(c.kernel.shape[-1]) for c in conv_layers(build_architecture(architecture, (28, 28, 1), 10))))


def _recipe_spec(base, epochs: int) -> dict:
    """A record's ``recipe``: one of :mod:`~ipguard_tf.zoo.stealing`'s SGD recipes at ``epochs``."""
    return dict(base.as_dict(), epochs=epochs)


def _seeded(family: str, count: int) -> List[Tuple[str, int]]:
    """(name, seed) of ``count`` models of a family made from the source: one is ``family`` with seed 0 (the
    quick zoo's names), several are ``family_s1``... with seeds 1...``count``."""
    return [(family, 0)] if count == 1 else [(f"{family}_s{s}", s) for s in range(1, count + 1)]


#: seconds per epoch of 30,000 images on the project's 2-core CPU (architectures.SAC_ARCHITECTURES' timings): what
#: :func:`estimate_seconds` multiplies
SAC_EPOCH_SECONDS: Dict[str, float] = {
    "sac_vgg16": 25.0,
    "sac_vgg13": 29.0,
    "sac_resnet18": 51.0,
    "sac_mobilenet_v2": 51.0,
    "sac_densenet": 131.0,
}


#: an epoch of the victim's answers (a forward pass of the source over the attacker half) as a share of an epoch of
#: training the source: what an augmenting thief adds to each extraction epoch in :func:`estimate_seconds`
VICTIM_QUERY_EPOCH_SHARE = 1 / 3


def estimate_seconds(profile: SACProfile, members_: Optional[List[tuple]] = None) -> float:
    """About how long a serial build of ``profile``'s members (default all of :func:`plan`) takes on the
    project's 2-core CPU: each member's epochs over the attacker half times its architecture's time per epoch
    (:data:`SAC_EPOCH_SECONDS`), a PGD epoch (Extract-Adv, adversarial fine-tuning) 1 + PGD steps times an
    ordinary one, fine-pruning its in-loop fine-tuning passes plus the snapshots' fine-tuning, and an augmenting
    thief's queries (:data:`VICTIM_QUERY_EPOCH_SHARE` of a source epoch per extraction epoch). A guide for sizing a
    cluster, not a measurement: the quick zoo's members took 0.54 to 1.4 times their estimate on the 2-core AMD
    EPYC that first built it, and those rebuilt with the augmenting thief (issue 31) 0.15 to 0.88 times it on a
    2-core Intel Xeon (Extract-Adv, fine-tuning and CAE's surrogates the least)."""
    out = 0.0
    for _, rec, _ in plan(profile) if members_ is None else members_:
        epoch = SAC_EPOCH_SECONDS.get(rec["architecture"], SAC_EPOCH_SECONDS["sac_vgg16"])
        p, fam = rec.get("params") or {}, rec["family"]
        if fam == "quantized":
            continue
        if fam == "prune":  # the run once (its first snapshot), then each snapshot's fine-tuning
            if p["snapshot"] == 0:
                channels = _conv_channels(rec["architecture"])
                passes = profile.prune_max * channels / p["finetune_every"]
                out += passes * p["finetune_examples"] / 30000 * epoch
            out += (p.get("finetune_after") or {}).get("epochs", 0) * epoch
            continue
        epochs = p["recipe"]["epochs"]
        share = 1.0 if p.get("max_examples") is None else min(1.0, p["max_examples"] / 30000)
        if fam in ("extract_adv", "adv_finetune"):
            out += epochs * epoch * (1 + p["steps"]) * share
        else:
            out += epochs * epoch
        if p.get("augment") and fam in ("extract_l", "extract_p", "extract_adv", "cae_surrogate"):
            source = SAC_EPOCH_SECONDS.get(profile.source, SAC_EPOCH_SECONDS["sac_vgg16"])
            out += epochs * source * VICTIM_QUERY_EPOCH_SHARE * share
    return out


def _augment(profile: SACProfile) -> Dict[str, str]:
    """The ``augment`` parameter of a record trained on the thief's pipeline (none without augmentation)."""
    return {} if augmentation(profile.attacker_augment) is None else {"augment": str(profile.attacker_augment)}


def _irrelevant(profile: SACProfile, count: int, family: str, seed_base: int, extra: Dict[str, Any]) -> list:
    """``count`` irrelevant models (negatives) of ``family``: the student architectures in turn, trained from seed
    ``seed_base + s`` on the attacker half with the irrelevant models' recipe (``extra``: e.g. the label set)."""
    out = []
    for i in range(count):
        arch = profile.students[i % len(profile.students)]
        short, s = arch.replace("sac_", ""), i // len(profile.students) + 1
        rec = dict(
            role="negative",
            family=family,
            maker="sac_trained",
            architecture=arch,
            data="attacker",
            **extra,
            params={"recipe": _recipe_spec(S.EXTRACT_L, profile.irrelevant_epochs)},
            seed=seed_base + s,
        )
        out.append((f"{family}_{short}_s{s}", rec, ".keras"))
    return out


def plan(profile: SACProfile) -> list:
    """The members of a SAC zoo in build order: ``(name, record without name, file suffix)``."""

    pgd = dict(epsilon=S.PGD_EPSILON, step=S.PGD_STEP, steps=profile.pgd_steps, max_examples=profile.adv_examples)
    aug = _augment(profile)
    sgd = _recipe_spec(S.EXTRACT_L, profile.source_epochs)
    out = [
        (
            "target",
            dict(
                role="target",
                family="source",
                maker="sac_trained",
                architecture=profile.source,
                data="defender",
                params={"recipe": sgd},
                seed=0,
            ),
            ".keras",
        )
    ]
    for arch in profile.students:
        short = arch.replace("sac_", "")
        for s in range(1, profile.seeds + 1):
            l_name = f"extract_l_{short}_s{s}"
            out.append(
                (
                    l_name,
                    dict(
                        role="positive",
                        family="extract_l",
                        architecture=arch,
                        data="attacker",
                        params={"recipe": _recipe_spec(S.EXTRACT_L, profile.extract_epochs), **aug},
                        seed=s,
                    ),
                    ".keras",
                )
            )
            out.append(
                (
                    f"extract_p_{short}_s{s}",
                    dict(
                        role="positive",
                        family="extract_p",
                        architecture=arch,
                        data="attacker",
                        params={
                            "recipe": _recipe_spec(S.EXTRACT_P, profile.extract_epochs),
                            "temperature": S.EXTRACT_P_TEMPERATURE,
                            "alpha": S.EXTRACT_P_ALPHA,
                            **aug,
                        },
                        seed=s,
                    ),
                    ".keras",
                )
            )
            out.append(
                (
                    f"extract_adv_{short}_s{s}",
                    dict(
                        role="positive",
                        family="extract_adv",
                        architecture=arch,
                        data="attacker",
                        params={
                            "recipe": _recipe_spec(S.EXTRACT_ADV, profile.adv_epochs),
                            "student": l_name,
                            **pgd,
                            **aug,
                        },
                        seed=s,
                    ),
                    ".keras",
                )
            )
    for fam in ("finetune_a", "finetune_l"):
        for name, seed in _seeded(fam, profile.finetune_seeds):
            out.append(
                (
                    name,
                    dict(
                        role="positive",
                        family=fam,
                        architecture=profile.source,
                        data="attacker",
                        params={"recipe": _recipe_spec(S.FINETUNE, profile.finetune_epochs), **aug},
                        seed=seed,
                    ),
                    ".keras",
                )
            )
    refresh, finetune_every = S.scaled_prune_intervals(_conv_channels(profile.source))
    after = (
        {"finetune_after": _recipe_spec(S.FINETUNE, profile.prune_finetune_epochs)}
        if profile.prune_finetune_epochs
        else {}
    )
    prune = dict(
        max_fraction=profile.prune_max,
        snapshots=profile.prune_snapshots,
        refresh=refresh,
        finetune_every=finetune_every,
        finetune_examples=S.FINE_PRUNE_FINETUNE_EXAMPLES,
        learning_rate=S.FINE_PRUNE_LR,
        batch_size=S.FINE_PRUNE_BATCH,
        **aug,
    )
    n_snaps = int(np.floor(profile.prune_max * profile.prune_snapshots + 1e-9))
    for j in range(n_snaps):
        out.append(
            (
                f"prune_{j + 1:02d}of{profile.prune_snapshots}",
                dict(
                    role="positive",
                    family="prune",
                    architecture=profile.source,
                    data="attacker",
                    params=dict(prune, snapshot=j, **after),
                    seed=0,
                ),
                ".keras",
            )
        )
    for fam in ("transfer_a", "transfer_l"):
        for name, seed in _seeded(fam, profile.transfer_seeds):
            out.append(
                (
                    name,
                    dict(
                        role="positive",
                        family=fam,
                        architecture=profile.source,
                        data="attacker",
                        labels=COARSE_NAME,
                        params={"recipe": _recipe_spec(S.TRANSFER, profile.transfer_epochs)},
                        seed=seed,
                    ),
                    ".keras",
                )
            )
    out.append(
        (
            "adv_finetune",
            dict(
                role="positive",
                family="adv_finetune",
                architecture=profile.source,
                data="attacker",
                params={"recipe": _recipe_spec(S.ADV_FINETUNE, profile.adv_finetune_epochs), **pgd},
                seed=0,
            ),
            ".keras",
        )
    )

    for name, rec in quantized_records(profile.source):
        out.append((name, dict(rec, data="attacker"), ".tflite"))
    out += _irrelevant(profile, profile.irrelevant, "irrelevant", 100, {})
    out += _irrelevant(profile, profile.irrelevant_transfer, "irrelevant_transfer", 110, {"labels": COARSE_NAME})
    out += cae_plan(profile)
    return out


def cae_plan(profile: SACProfile) -> list:
    """CAE's defender ensemble (Lukas et al., ICLR 2021, Section 5: the defender derives surrogates of its own
    source and trains reference models itself; RorschachChen/conferrable_adversarial_examples_pytorch
    ``cem_helper_func.prepare_models``: surrogates retrained on the source's labels, references on the true
    labels, both on the defender's training data). Here: Extract-L students (the same SGD recipe and epochs as
    the thief's) and models trained from seed on true labels, all on the *defender's* half, so that none is
    one of the evaluated suspects (which the attacker trains on the other half). Roles ``surrogate`` and
    ``reference``: sweeps and zoo verification leave them out."""

    out = []
    epochs = _recipe_spec(S.EXTRACT_L, profile.extract_epochs)
    ref_epochs = _recipe_spec(S.EXTRACT_L, profile.irrelevant_epochs)
    for s in range(1, profile.cae_members + 1):
        arch = profile.cae_architectures[(s - 1) % len(profile.cae_architectures)]
        short = arch.replace("sac_", "")
        out.append(
            (
                f"cae_surrogate_{short}_s{s}",
                dict(
                    role="surrogate",
                    family="cae_surrogate",
                    architecture=arch,
                    data="defender",
                    params={"recipe": epochs, **_augment(profile)},
                    seed=200 + s,
                ),
                ".keras",
            )
        )
        out.append(
            (
                f"cae_reference_{short}_s{s}",
                dict(
                    role="reference",
                    family="cae_reference",
                    maker="sac_trained",
                    architecture=arch,
                    data="defender",
                    params={"recipe": ref_epochs},
                    seed=300 + s,
                ),
                ".keras",
            )
        )
    return out


# -- the builder -----------------------------------------------------------------------------------------------------


@dataclass
class SACZooBuilder(ZooBuilder):
    """Builds the SAC Fashion-MNIST zoo into ``out`` (resumable, deterministic: see
    :class:`~ipguard_tf.zoo.builder.ZooBuilder`); call :meth:`build`."""

    profile: SACProfile = field(default_factory=lambda: SAC_PROFILES["quick"])
    split_seed: int = SAC_SPLIT_SEED
    _split: Optional[SACData] = field(default=None, repr=False)
    _runs: Dict[Any, Any] = field(default_factory=dict, repr=False)
    _source_test_labels: Optional[np.ndarray] = field(default=None, repr=False)
    #: models rejected under the floor in this process, kept for what is made from them (:meth:`_get`)
    _rejected_models: Dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        from pathlib import Path

        self.out = Path(self.out)
        if self.dataset_name != "fashion_mnist":
            raise ZooError(f"the SAC zoo is defined on fashion_mnist, not {self.dataset_name!r}")
        self.arch = self.profile.source

    #: the IPGuard zoo's makers (trained, quantized, ...) and the SAC attacks'
    makers = {**MAKERS, **SAC_MAKERS}

    def split(self) -> SACData:
        if self._split is None:
            self._split = sac_split(self._data(), self.split_seed, self.profile.subset)
        return self._split

    kind = "sac"

    def _manifest_fields(self) -> Dict[str, Any]:
        """The profile and the defender/attacker split (an existing zoo must have been built on this split)."""
        split = self.split()
        rec = self.manifest.get("split", {})
        if rec.get("indices_sha256") not in (None, split.indices_sha256):
            raise ZooError(f"{self.out} was built on another defender/attacker split (seed {rec.get('seed')})")
        return {
            "profile_spec": self.profile.as_dict(),
            "split": {
                "seed": split.seed,
                "defender": len(split.defender.x),
                "attacker": len(split.attacker.x),
                "test": len(split.test.x),
                "indices_sha256": split.indices_sha256,
            },
        }

    def _calibration_x(self) -> np.ndarray:
        """The thief calibrates an int8 copy on his own data, the attacker half."""
        return self.split().attacker.x

    def _labels(self, model) -> np.ndarray:

        return as_classifier(model).predict_labels(self.split().test.x, 512)

    def accuracy_floor(self) -> Optional[float]:
        """The test accuracy a stolen model must keep to count (the profile's ``max_accuracy_drop``, by default
        :data:`STOLEN_MAX_ACCURACY_DROP`, below the source's); None before the source is built."""
        target = self.record("target")
        return None if target is None else round(target["test_accuracy"] - self.profile.max_accuracy_drop, 4)

    def _get(self, name: str) -> Any:
        """As :meth:`ZooBuilder._get`; a member rejected under the floor is not stored, but what is made from it
        still is (an Extract-Adv student is trained on from its Extract-L student, usable or not, as SAC's
        ``model_extract_adv.py`` does; the floor judges the result): the model kept since it was rejected, else
        made again from its plan (deterministic)."""
        if self.record(name) is not None or self._rejected(name) is None:
            return super()._get(name)
        if name not in self._rejected_models:
            member = next((m for m in self.planned() if m.name == name), None)
            if member is None:
                raise ZooError(f"{self.out}: no member {name!r} in the plan of this zoo")
            log.info("zoo %s: making rejected %s again for what is made from it", self.out, name)
            self._rejected_models[name] = maker_of(member.info, self.makers)(self, member.info)[0]
        return self._rejected_models[name]

    def build_member(self, member: Any) -> bool:
        """As :meth:`ZooBuilder.build_member`; False for a stolen model rejected (now or earlier) under the
        accuracy floor (:meth:`accuracy_floor`)."""
        if self._rejected(member if isinstance(member, str) else member.name):
            return False
        return (
            super().build_member(member) and self._rejected(member if isinstance(member, str) else member.name) is None
        )

    def _store(self, name: str, model: Any, info: Dict[str, Any], suffix: str = ".keras") -> Optional[Dict[str, Any]]:
        """Record test accuracy (on the coarse labels for a transfer model) and agreement with the source; a
        stolen model (role ``positive``) below :meth:`accuracy_floor` is recorded in ``rejected`` with its
        accuracy, not stored (a transfer model's accuracy is on its own 4 classes, measured against the same
        floor)."""
        test = self.split().test
        pred = self._labels(model)
        coarse = info.get("labels") == COARSE_NAME
        info = dict(info, test_accuracy=float(np.mean(pred == (COARSE_LABELS[test.y] if coarse else test.y))))
        floor = self.accuracy_floor()
        if info.get("role") == "positive" and floor is not None and info["test_accuracy"] < floor:
            self.manifest.setdefault("rejected", []).append(
                {
                    "name": name,
                    **{k: info[k] for k in ("role", "family", "architecture", "params", "seed") if k in info},
                    **({"pruned_fraction": info["pruned_fraction"]} if "pruned_fraction" in info else {}),
                    "test_accuracy": round(info["test_accuracy"], 4),
                    "floor": floor,
                    "reason": f"test accuracy {info['test_accuracy']:.4f} < floor {floor:.4f} (source - "
                    f"{self.profile.max_accuracy_drop:.2f}): not a usable copy",
                }
            )
            self._write_manifest()
            log.info("zoo: %s rejected (accuracy %.4f < floor %.4f)", name, info["test_accuracy"], floor)
            if any(name in m.needs for m in self.planned()):
                self._rejected_models[name] = model
            return None
        if name == "target":
            self._source_test_labels = pred
            info["agreement"] = 1.0
        elif not coarse:
            if self._source_test_labels is None:
                self._source_test_labels = self._labels(self._get("target"))
            info["agreement"] = float(np.mean(pred == self._source_test_labels))
        else:
            info["agreement"] = None
        rec = super()._store(name, model, info, suffix)
        if name == "target" or "accuracy_floor" not in self.manifest:
            self.manifest["accuracy_floor"] = {
                "max_drop": self.profile.max_accuracy_drop,
                "floor": self.accuracy_floor(),
            }
            self._write_manifest()
        return rec

    def _plan_members(self) -> List[PlannedMember]:
        """:func:`plan`; the fine-pruning snapshots of one run are made together (one task of a parallel build)."""
        return [
            PlannedMember(
                name, info, suffix, run=f"fine_prune_seed{info['seed']}" if info["family"] == "prune" else None
            )
            for name, info, suffix in plan(self.profile)
        ]

    def needs(self, member: PlannedMember) -> Tuple[str, ...]:
        """Every member needs the source (its record holds its agreement with it); Extract-Adv its student too."""
        if member.name == "target":
            return ()
        return ("target",) + ((member.info["params"]["student"],) if member.info["family"] == "extract_adv" else ())

    def _build(self, only_target: bool) -> Dict[str, Any]:
        """Build every missing member in :func:`plan` order (under the lock :meth:`ZooBuilder.build` holds)."""
        self.start()
        for member in self.planned():
            self.build_member(member)
            if only_target:
                return self.manifest
            if member.run is None:
                self._runs.clear()  # a fine-pruning run is kept only while its snapshots are stored
        self.manifest["complete"] = True
        self._write_manifest()
        return self.manifest


def sac_rows(folder) -> list:
    """One row per member of a SAC zoo: role, family, architecture, accuracy, agreement, queries."""

    rows = []
    for r in members(folder):
        rows.append(
            {
                "name": r["name"],
                "role": r["role"],
                "family": r["family"],
                "architecture": r["architecture"],
                "accuracy": f"{r['test_accuracy']:.4f}" + (" (4 classes)" if r.get("labels") else ""),
                "agreement": "-" if r.get("agreement") is None else f"{r['agreement']:.4f}",
                "queries": r.get("queries", ""),
            }
        )
    return rows
