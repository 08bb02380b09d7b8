"""``ipguard demo``: the whole method on Fashion-MNIST in a few minutes on a CPU.

1. Load the target CNN from ``pretrained/fashion_mnist/target.keras`` (train it with the committed recipe,
   showing Keras' progress bar, if it is missing).
2. Extract an IPGuard fingerprint: n = 100, strategy -TL, k = :data:`DEMO_K`, seed 0.
3. Take one positive suspect (FTLL: the target with its last layer fine-tuned) and one negative suspect (the
   same architecture trained from seed 1) from the committed zoo ``pretrained/fashion_mnist`` (``ftll`` and
   ``same_arch_seed01``); where they are missing, make them with the same functions and seeds and cache them
   in the work folder.
4. Verify the target itself and both suspects and print the table.

Why k = 1 and -TL: k must suit the target's logit scale. On this 225 k-parameter CNN a same-architecture model
from another seed labels k = 10 points like the target almost always (no uniqueness), whereas at k = 1 it
agrees on few of them while the fine-tuned copy still agrees on nearly all; -TL is the paper's best strategy.
The committed sweep in ``experiments/results/`` has the numbers.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Optional

from ipguard_tf.core.constants import DEFAULT_THRESHOLD, N_POINTS
from ipguard_tf.io.data import load_fashion_mnist
from ipguard_tf.io.files import format_table
from ipguard_tf.methods import IPGuard
from ipguard_tf.models.classifier import save_keras_atomic
from ipguard_tf.verification.suspects import verify
from ipguard_tf.zoo import RECIPES, evaluate_accuracy, fine_tune_last_layer, train_model
from ipguard_tf.zoo.store import is_zoo, read_manifest

log = logging.getLogger(__name__)

DEMO_K = 1.0
DEMO_INIT = "T"
DEMO_LABEL = "L"
TARGET_ARCH = "fmnist_cnn"
TARGET_SEED = 0
NEGATIVE_SEED = 1
FTLL_EPOCHS = 2


def repo_pretrained_dir() -> Path:
    """``pretrained/`` of this checkout (or IPGUARD_PRETRAINED)."""
    env = os.environ.get("IPGUARD_PRETRAINED")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "pretrained"  # ipguard_tf/evaluation/demo.py -> the checkout


def load_or_train(path: Path, ds, seed: int, progress: bool):
    """Load the model at ``path``, or train ``fmnist_cnn`` with ``seed`` and save it there."""
    import keras

    if path.exists():
        return keras.saving.load_model(str(path))
    log.info("%s missing: training %s (seed %d)", path, TARGET_ARCH, seed)
    model = train_model(ds, RECIPES[("fashion_mnist", TARGET_ARCH)], seed, verbose=1 if progress else 0)
    try:
        save_keras_atomic(model, path)
    except OSError as exc:
        log.warning("could not save %s (%s); continuing without caching it", path, exc)
    return model


def _from_zoo(zoo: Path, name: str):
    """A member of the committed zoo, if it is there (the same recipe and seed the demo would use)."""

    if not is_zoo(zoo):
        return None
    rec = next((r for r in read_manifest(zoo)["models"] if r["name"] == name), None)
    if rec is None or not (zoo / rec["file"]).exists():
        return None
    import keras

    return keras.saving.load_model(str(zoo / rec["file"]))


def compute_demo(
    workdir: Optional[str] = None,
    pretrained: Optional[str] = None,
    data_dir: Optional[str] = None,
    seed: int = 0,
    progress: bool = True,
):
    """Run the demo's steps; return (method, fingerprint, rows, models) where each row describes one suspect and
    ``models`` maps "target", "ftll" and "negative" to the models used."""
    import keras

    ds = load_fashion_mnist(data_dir)
    pre = Path(pretrained) if pretrained else repo_pretrained_dir()
    work = Path(workdir) if workdir else Path(os.path.expanduser("~/.cache/ipguard_tf/demo"))
    target = load_or_train(pre / "fashion_mnist" / "target.keras", ds, TARGET_SEED, progress)

    method = IPGuard(k=DEMO_K, init=DEMO_INIT, label=DEMO_LABEL, seed=seed, progress=progress)
    fp = method.generate(target, N_POINTS, ds.x_train, dataset="fashion_mnist")
    log.info("fingerprint: %d points, %d converged, %.1f s", len(fp), fp.n_converged, fp.metadata["seconds"])

    zoo = pre / "fashion_mnist"
    ftll = _from_zoo(zoo, "ftll") if seed == 0 else None
    if ftll is None:
        ftll_path = work / f"ftll_seed{seed}.keras"
        if ftll_path.exists():
            ftll = keras.saving.load_model(str(ftll_path))
        else:
            log.info("making the positive suspect: fine-tuning the target's last layer (%d epochs)", FTLL_EPOCHS)
            ftll = fine_tune_last_layer(target, ds, epochs=FTLL_EPOCHS, seed=seed, verbose=1 if progress else 0)
            save_keras_atomic(ftll, ftll_path)
    neg = _from_zoo(zoo, f"same_arch_seed{NEGATIVE_SEED:02d}")
    if neg is None:
        neg = load_or_train(work / f"negative_seed{NEGATIVE_SEED}.keras", ds, NEGATIVE_SEED, progress)

    rows = []
    for name, kind, model in (
        ("target itself", "same model", target),
        ("FTLL copy", "positive", ftll),
        (f"{TARGET_ARCH} seed {NEGATIVE_SEED}", "negative", neg),
    ):
        v = verify(fp, model, DEFAULT_THRESHOLD, name=name)
        rows.append(
            {
                "suspect": name,
                "kind": kind,
                "accuracy": evaluate_accuracy(model, ds.x_test, ds.y_test),
                "matching_rate": v.matching_rate,
                "verdict": v.verdict,
            }
        )
    return method, fp, rows, {"target": target, "ftll": ftll, "negative": neg}


def run_demo(
    workdir: Optional[str] = None,
    pretrained: Optional[str] = None,
    data_dir: Optional[str] = None,
    seed: int = 0,
    progress: bool = True,
) -> int:
    """``ipguard demo``: run :func:`compute_demo` and print its table."""

    t0 = time.perf_counter()
    method, fp, rows, _ = compute_demo(workdir, pretrained, data_dir, seed, progress)
    print(
        f"IPGuard-{method.strategy}, k = {DEMO_K:g}, n = {len(fp)} ({fp.n_converged} converged), "
        f"threshold {DEFAULT_THRESHOLD:g}, Fashion-MNIST, seed {seed}"
    )
    print(
        format_table(
            rows,
            [
                ("suspect", "suspect", "{}"),
                ("kind", "kind", "{}"),
                ("test acc", "accuracy", "{:.4f}"),
                ("matching rate", "matching_rate", "{:.2f}"),
                ("verdict", "verdict", "{}"),
            ],
        )
    )
    print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return 0
