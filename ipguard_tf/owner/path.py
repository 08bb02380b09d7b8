"""The owner's path (issue 30): fingerprint a model its owner brings, with settings tuned to it, in one call.

:func:`fingerprint_owner_model` is what ``ipguard fingerprint`` runs:

1. **Input domain.** The input shape comes from the model. ``data`` is the owner's examples
   (:func:`~ipguard_tf.io.owner_data.load_owner_data`); the points then start at them (IPGuard's T initialisation).
   Without data, a model of Fashion-MNIST's shape (28x28x1, 10 classes) uses Fashion-MNIST when it is installed;
   any other model starts from uniform points (R), and the summary says so.
2. **Copies.** :func:`~ipguard_tf.zoo.copies.cheap_copies`. With labelled data each copy's accuracy is measured on
   the held-out split and a copy more than :data:`~ipguard_tf.core.constants.MAX_ACCURACY_LOSS` (the paper's 3 %)
   below the target is rejected: it is not one a thief would deploy.
3. **Negatives.** ``negatives`` = N trains N models of the target's architecture on the owner's labelled data
   (:mod:`ipguard_tf.zoo.negatives`; kept in ``OUT.negatives/``), or names a folder / zoo of independent models.
4. **Setting.** ``k="auto"`` tries the grid of :mod:`ipguard_tf.owner.tune`; a number fixes k (label L).
5. **Calibration and report.** With at least two negatives the chosen fingerprint is calibrated at ``fpr``
   (:func:`~ipguard_tf.verification.calibration.calibrate`); the ownership report lists the copies (role positive)
   and negatives (role negative) with their verdicts, how the setting was chosen, and the smallest FPR the number
   of negatives supports.

The negatives that choose the setting also calibrate its threshold: choosing among a few settings by the
negatives' worst rate can make the null slightly optimistic, which the report says; a folder of further negatives
calibrates without that bias (``ipguard calibrate``). Candidate fingerprints are kept in ``OUT.tuning/`` while the
run lasts, so a re-run after an interruption resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ipguard_tf.core import registry
from ipguard_tf.core.calibration import MIN_NEGATIVES, Calibration, smallest_supported_fpr, with_calibration
from ipguard_tf.core.constants import CALIBRATION_FPR, DEFAULT_LABEL, MAX_ACCURACY_LOSS, N_POINTS
from ipguard_tf.core.errors import DataError, ModelError, ParameterError
from ipguard_tf.core.statistics import statistic_of
from ipguard_tf.evaluation.ownership import write_ownership_report
from ipguard_tf.io.data import Dataset
from ipguard_tf.io.fingerprint_file import load_fingerprint, save_fingerprint
from ipguard_tf.io.owner_data import load_owner_data
from ipguard_tf.models.classifier import _is_keras3_model, _is_tf_keras_model, as_classifier, load_model_file
from ipguard_tf.owner.tune import Setting, Tuning, candidates, logit_scale, tune
from ipguard_tf.verification.calibration import calibrate, negative_models
from ipguard_tf.verification.suspects import choose_threshold, verify, zoo_summary
from ipguard_tf.zoo.copies import Copy, accuracy_of, cheap_copies
from ipguard_tf.zoo.negatives import EPOCHS, fresh_clone, recipe, target_accuracy, train_negatives

log = logging.getLogger(__name__)

FASHION_MNIST_SHAPE = (28, 28, 1)
#: seeds of the random-weight models every candidate is scored on (apart from the negatives' seeds 1..N)
RANDOM_SEEDS = tuple(range(101, 106))
#: starting points the target's logit scale is measured on
SCALE_POINTS = 100
TUNING_SCHEMA = "ipguard_tf.tuning/1"


@dataclass
class OwnerResult:
    """What :func:`fingerprint_owner_model` did: the fingerprint written, its SHA-256, how its setting was chosen,
    the copies and negatives, the calibration (None without one), the report's path, and what to tell the owner."""

    fingerprint: Any
    sha256: str
    tuning: Tuning
    copies: List[Copy]
    negatives: List[Dict[str, Any]]
    calibration: Optional[Calibration]
    report: Optional[str]
    notes: List[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [*self.notes, self.tuning.summary()]
        rejected = [c for c in self.copies if not c.accepted]
        if rejected:
            lines.append("copies rejected (accuracy floor): " + ", ".join(f"{c.name} ({c.note})" for c in rejected))
        if self.negatives:
            lines.append(
                "negatives: "
                + ", ".join(
                    f"{n['name']} (acc {n['accuracy']:.3f})" if n.get("accuracy") is not None else n["name"]
                    for n in self.negatives
                )
            )
        if self.calibration is not None:
            lines.append(self.calibration.summary())
            n_neg = len(self.calibration.negatives)
            floor = smallest_supported_fpr(n_neg)
            lines.append(
                f"{n_neg} negatives support false-positive rates down to about {floor:.2g} on their own "
                f"(95 % bound with none matching); the threshold at {self.calibration.fpr:g} "
                + ("rests on the fitted null below that" if self.calibration.fpr < floor else "is within it")
            )
        return "\n".join(lines)


def _keras_target(model: Any, unsafe: bool) -> Any:
    raw = load_model_file(model, unsafe=unsafe) if isinstance(model, (str, Path)) else model
    if not (_is_keras3_model(raw) or _is_tf_keras_model(raw)):
        raise ModelError(
            f"{model}: the owner's path needs the Keras model itself (.keras, .h5 or a Keras SavedModel): its copies "
            "are made from its weights (a .tflite or .onnx file can be verified as a suspect, not fingerprinted)"
        )
    return raw


def _owner_data(
    data: Optional[str], shape: Tuple[int, ...], classes: Optional[int], data_dir: Optional[str], seed: int
) -> Tuple[Optional[Dataset], str]:
    if data is not None:
        ds = load_owner_data(data, input_shape=shape, data_dir=data_dir, seed=seed)
        if ds.y_train is not None and classes and ds.num_classes > classes:
            raise DataError(f"--data {data}: labels go up to {ds.num_classes - 1} but the model has {classes} classes")
        labelled = "labelled" if ds.y_train is not None else "unlabelled"
        return ds, (
            f"data: {len(ds.x_train)} {labelled} examples of {data} (+{len(ds.x_test)} held out); "
            "points start at them (-T)"
        )
    if shape == FASHION_MNIST_SHAPE and classes == 10:
        try:
            ds = load_owner_data("fashion_mnist", input_shape=shape, data_dir=data_dir, seed=seed)
            return ds, "data: Fashion-MNIST (no --data; the model has Fashion-MNIST's shape); points start at it (-T)"
        except DataError as exc:
            log.warning("Fashion-MNIST not available (%s): uniform starting points", exc)
    return None, f"data: none; input shape {shape} from the model; points start uniform in [0, 1] (-R)"


def _data_digest(ds: Optional[Dataset]) -> str:
    if ds is None:
        return "none"
    h = hashlib.sha256(np.ascontiguousarray(ds.x_train).tobytes())
    if ds.y_train is not None:
        h.update(np.ascontiguousarray(ds.y_train).tobytes())
    return h.hexdigest()


def _negatives(
    spec: Union[None, int, str],
    raw: Any,
    ds: Optional[Dataset],
    out: Path,
    *,
    epochs: int,
    input_scale: float,
    data_dir: Optional[str],
    unsafe: bool,
    notice: Callable[[str], None],
    ray: Any = None,
    model_file: Optional[str] = None,
) -> Tuple[List[Tuple[str, Any]], List[Dict[str, Any]], str]:
    """(name, classifier) of each negative, their records, and where they came from."""
    if spec is None:
        return [], [], ""
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        folder = out.with_name(out.stem + ".negatives")
        trained = train_negatives(
            raw,
            ds,
            int(spec),
            folder,
            epochs=epochs,
            input_scale=input_scale,
            progress=notice,
            ray=ray,
            model_file=model_file,
        )
        items = [(name, as_classifier(m, input_scale=input_scale, name=name)) for name, m, _ in trained]
        recs = [{"name": name, "accuracy": acc} for name, _, acc in trained]
        return items, recs, f"{folder} (trained: {json.dumps(recipe(epochs), sort_keys=True)})"
    items = []
    for name, m in negative_models(str(spec), data_dir=data_dir, unsafe=unsafe, notice=notice, input_scale=input_scale):
        items.append((Path(name).name, as_classifier(m, input_scale=input_scale, name=Path(name).name)))
    recs = []
    for name, clf in items:
        acc = None
        if ds is not None and ds.y_test is not None:
            acc = accuracy_of(clf, ds.x_test, ds.y_test)
        recs.append({"name": name, "accuracy": acc})
    return items, recs, str(spec)


def _extractor(
    clf: Any, ds: Optional[Dataset], n: int, seed: int, work: Path, key: Dict[str, Any], progress: bool
) -> Callable[[Setting], Any]:
    def extract(setting: Setting) -> Any:
        path = work / f"k{setting.k:g}{setting.strategy}.npz"
        ckpt = path.with_suffix(".checkpoint.npz")
        mine = dict(key, setting=setting.params())
        if path.exists():
            try:
                fp = load_fingerprint(path)
                if fp.metadata.get("tuning_key") == mine:
                    log.info("%s: reused %s", setting, path)
                    return fp
            except Exception as exc:  # a damaged candidate is extracted again
                log.warning("%s: %s; extracting it again", path, exc)
        method = registry.build("ipguard", **setting.params(), seed=seed, progress=progress)
        fp = method.generate(
            clf,
            n,
            ds.x_train if ds is not None else None,
            train_y=ds.y_train if ds is not None else None,
            dataset=ds.name if ds is not None else None,
            checkpoint=ckpt,
        )
        fp.metadata["tuning_key"] = mine
        save_fingerprint(fp, path)
        ckpt.unlink(missing_ok=True)
        return fp

    return extract


def fingerprint_owner_model(
    model: Any,
    out: Union[str, Path],
    *,
    data: Optional[str] = None,
    data_dir: Optional[str] = None,
    negatives: Union[None, int, str] = None,
    negative_epochs: int = EPOCHS,
    k: Union[str, float] = "auto",
    n: int = N_POINTS,
    fpr: float = CALIBRATION_FPR,
    seed: int = 0,
    input_scale: float = 1.0,
    unsafe: bool = False,
    report: Optional[Union[str, Path]] = None,
    progress: bool = True,
    notice: Callable[[str], None] = log.warning,
    command: str = "",
    ray: Any = None,
) -> OwnerResult:
    """Fingerprint the owner's ``model`` (a Keras model or its file) and write it to ``out``; see the module docstring.

    ``report`` defaults to ``out`` with the suffix ``.html`` when there are negatives (no report without them: it
    would have nothing to compare the copies with). ``ray``: a :class:`~ipguard_tf.zoo.parallel.RayOptions` to train
    ``--negatives N`` as Ray tasks (issue 32). Problems are one-line package errors."""
    out = Path(out)
    raw = _keras_target(model, unsafe)
    name = Path(model).name if isinstance(model, (str, Path)) else getattr(raw, "name", "model")
    clf = as_classifier(raw, input_scale=input_scale, name=name)
    clf.source = str(model) if isinstance(model, (str, Path)) else clf.source
    shape = tuple(clf.input_shape or ())
    if len(shape) != 3 or not all(shape):
        raise ModelError(f"{name}: input shape {shape or 'unknown'}; the owner's path needs images (H, W, C)")
    ds, data_note = _owner_data(data, shape, clf.num_classes, data_dir, seed)
    notes = [data_note]
    if isinstance(negatives, int) and (ds is None or ds.y_train is None):  # before minutes of work, not after
        raise ParameterError("--negatives N trains negatives on labelled data: give --data with labels (or a folder)")

    acc = target_accuracy(raw, ds, input_scale)
    if acc is not None:
        notes.append(f"target accuracy on the held-out split: {acc:.4f}")
    copies = cheap_copies(
        raw, x=ds.x_train if ds is not None else None, y=ds.y_train if ds is not None else None,
        input_scale=input_scale, seed=seed,
    )  # fmt: skip
    copy_clfs = []
    for c in copies:
        cc = as_classifier(c.model, input_scale=input_scale, name=c.name)
        if acc is not None:
            c.accuracy = accuracy_of(cc, ds.x_test, ds.y_test)
            if c.accuracy < acc - MAX_ACCURACY_LOSS:
                c.accepted = False
                c.note = f"accuracy {c.accuracy:.3f}, more than {MAX_ACCURACY_LOSS:g} below the target's {acc:.3f}"
        if c.accepted:
            copy_clfs.append((c.name, cc))
    if not copy_clfs:
        raise ParameterError("every self-made copy fell below the accuracy floor; nothing to tune on")

    neg_items, neg_recs, neg_source = _negatives(
        negatives, raw, ds, out, epochs=negative_epochs, input_scale=input_scale, data_dir=data_dir, unsafe=unsafe,
        notice=notice, ray=ray, model_file=str(model) if isinstance(model, (str, Path)) else None,
    )  # fmt: skip

    random = [(f"random-{s}", as_classifier(fresh_clone(raw, s), input_scale=input_scale)) for s in RANDOM_SEEDS]
    init = "T" if ds is not None else "R"
    rng = np.random.default_rng(seed)
    if ds is not None:
        start = ds.x_train[rng.choice(len(ds.x_train), min(SCALE_POINTS, len(ds.x_train)), replace=False)]
    else:
        start = rng.random((SCALE_POINTS, *shape), dtype=np.float32)
    scale = logit_scale(clf.predict_logits(start))
    notes.append(f"target's logit scale (median std of its logits over {len(start)} starting points): {scale:.3g}")
    settings = candidates(init, scale) if str(k) == "auto" else [Setting(float(k), init, DEFAULT_LABEL)]
    work = out.with_name(out.stem + ".tuning")
    work.mkdir(parents=True, exist_ok=True)
    key = {
        "schema": TUNING_SCHEMA,
        "target": clf.weights_sha256,
        "data": _data_digest(ds),
        "n": int(n),
        "seed": int(seed),
        "input_scale": float(input_scale),
    }
    tuning = tune(
        _extractor(clf, ds, n, seed, work, key, progress), settings, copy_clfs, neg_items, random, progress=progress
    )

    fp = tuning.best.fingerprint
    fp.metadata.pop("tuning_key", None)
    fp.metadata["command"] = command
    fp.metadata["input_scale"] = float(input_scale)
    fp.metadata["owner"] = {
        "data": data_note,
        "target_accuracy": acc,
        "logit_scale": scale,
        "random_seeds": list(RANDOM_SEEDS),
        "tuning": tuning.record(),
        "copies": [c.record() for c in copies],
        "negatives": neg_recs,
        "negatives_source": neg_source,
        "accuracy_floor": None if acc is None else acc - MAX_ACCURACY_LOSS,
    }
    cal = None
    if len(neg_items) >= MIN_NEGATIVES:
        cal = calibrate(fp, neg_items, fpr=fpr, source=neg_source, progress=progress)
        if cal.threshold > 1:
            notice(
                f"with {cal.n} negatives and {len(fp)} points no matching rate has a p-value <= {fpr}; the fingerprint "
                "is written without a calibration (use more points or a larger --fpr)"
            )
            cal = None
        else:
            fp = with_calibration(fp, cal)
            fp.metadata["calibration"]["command"] = command
    elif neg_items:
        notice(f"{len(neg_items)} negative: a calibration needs at least {MIN_NEGATIVES}")
    digest = save_fingerprint(fp, out)
    shutil.rmtree(work, ignore_errors=True)
    fp = load_fingerprint(out)

    report_path = None
    if neg_items or report is not None:
        report_path = str(report or out.with_suffix(".html"))
        threshold, source, cal_used = choose_threshold(fp)
        suspects: List[Tuple[str, Any, str]] = [(f"copy: {nm}", cc, "positive") for nm, cc in copy_clfs]
        suspects += [(f"negative: {nm}", cc, "negative") for nm, cc in neg_items]
        results = [verify(fp, cc, threshold, name=nm) for nm, cc, _ in suspects]
        if cal_used is not None:
            results = [
                replace(r, p_value=cal_used.p_value(r.matches, r.n)) if r.matches is not None else r for r in results
            ]
        roles: Sequence[str] = [role for _, _, role in suspects]
        write_ownership_report(
            report_path,
            fp,
            results,
            list(roles),
            calibration=cal_used,
            summary=zoo_summary(results, list(roles), statistic_of(fp)),
            command=command,
            threshold_source=source,
            notes=[
                *notes,
                f"Setting chosen by 'k auto': {tuning.best.setting} ({tuning.rule}); "
                f"{len(tuning.trials)} candidate(s) tried, recorded in the fingerprint's metadata (owner.tuning).",
                "The copies and negatives below are the ones the setting was chosen on (and the negatives calibrated "
                "the threshold): the table shows how the chosen setting separates them, not an independent test.",
            ]
            + ([] if neg_items else ["Uniqueness was not measured: no negatives."]),
        )
    return OwnerResult(fp, digest, tuning, copies, neg_recs, cal, report_path, notes)
