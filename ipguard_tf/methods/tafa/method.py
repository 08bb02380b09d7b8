"""TAFA through the method registry (a reconstruction of Pan et al. 2021; see :mod:`ipguard_tf.methods.tafa`).

``generate`` needs no data: starts are uniform in [0, 1] (classifiers and regressors on images) or N(0, 1)
latents (generators); each start gives at most one boundary point (:func:`~ipguard_tf.methods.tafa.boundary.
find_boundary_points`), kept only where the target's own output bends more at the point than at its start
(otherwise the neuron's kink does not reach the output: nothing to recognise a copy by); starts are drawn in
rounds until ``n`` points are kept or ``MAX_ROUNDS`` rounds have run. Every start that gave no point is counted
by reason in the metadata (``rejected``) and a warning; the fingerprint holds only checked points.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from ipguard_tf.core import constants as C
from ipguard_tf.core.errors import ModelError
from ipguard_tf.core.fingerprint import Fingerprint
from ipguard_tf.core.statistics import statistic_of
from ipguard_tf.core.tafa_statistics import (
    bend_rate,
    one_sided_slopes,
    output_agreement,
    output_correlation,
    scaled_bend_rate,
    second_difference,
    slope_agreement,
)
from ipguard_tf.io.env_info import utc_now, versions
from ipguard_tf.methods.base import FingerprintMethod
from ipguard_tf.methods.tafa.boundary import find_boundary_points
from ipguard_tf.methods.tafa.probe import ReluProbe
from ipguard_tf.models.classifier import content_sha256
from ipguard_tf.models.outputs import OutputFn, checked_outputs, keras_model_of, keras_outputs

log = logging.getLogger(__name__)

#: rounds of n starts at most (a round keeps the points the target bends at; most starts give one)
MAX_ROUNDS = 10
_DEFAULT_BATCH = 128


class TAFA(FingerprintMethod):
    """Task-agnostic boundary-point fingerprints of ReLU networks (reconstruction; module docstring)."""

    name = "tafa"

    @property
    def strategy(self) -> str:
        return "-"

    def _search(self, clf, plan, x0, src, tgt, *, checkpoint=None):  # pragma: no cover - generate is overridden
        raise NotImplementedError("TAFA overrides generate")

    def generate(
        self,
        model: Any,
        n: int = 100,
        train_x: Optional[np.ndarray] = None,
        *,
        train_y: Optional[np.ndarray] = None,
        dataset: Optional[str] = None,
        checkpoint: Optional[Union[str, Path]] = None,
        checkpoint_every: float = 60.0,
    ) -> Fingerprint:
        """``n`` boundary points of ``model`` (training data, if given, is not used: TAFA needs none)."""

        km = keras_model_of(model)
        probe = ReluProbe(km)
        domain = None if self.task == "generator" else (0.0, 1.0)
        rng = np.random.default_rng(self.seed)
        f = keras_outputs(km)
        t0 = time.perf_counter()
        kept: Dict[str, list] = {k: [] for k in ("x", "control", "normal", "neuron", "layer", "pattern", "preact")}
        rejected: Dict[str, int] = {}
        have, rounds = 0, 0
        while have < n and rounds < MAX_ROUNDS:
            rounds += 1
            shape = (n,) + probe.input_shape
            starts = (rng.standard_normal(shape) if domain is None else rng.random(shape)).astype(np.float32)
            pts = find_boundary_points(
                probe,
                starts,
                seed=int(rng.integers(2**31)),
                reach=self.reach,
                domain=domain,
                batch_size=self.batch_size or _DEFAULT_BATCH,
                progress=self.progress,
            )
            for k, v in pts.rejected.items():
                rejected[k] = rejected.get(k, 0) + v
            if not len(pts.x):
                continue
            bends = second_difference(f, pts.x, pts.normal, self.epsilon) > second_difference(
                f, pts.control, pts.normal, self.epsilon
            )
            if (~bends).any():
                rejected["the target's output does not bend there"] = rejected.get(
                    "the target's output does not bend there", 0
                ) + int((~bends).sum())
            take = np.flatnonzero(bends)[: n - have]
            for k in kept:
                kept[k].append(getattr(pts, k)[take])
            have += len(take)
        if have == 0:
            raise ModelError(
                f"TAFA found no usable boundary point on {km.name} in {rounds} rounds of {n} starts ({rejected})"
            )
        if have < n:
            log.warning("TAFA: only %d of %d points after %d rounds of starts", have, n, rounds)
        if rejected:
            log.warning(
                "TAFA: starts without a kept point, by reason: %s",
                ", ".join(f"{k}: {v}" for k, v in sorted(rejected.items())),
            )
        a = {k: np.concatenate(v) for k, v in kept.items()}
        x = a["x"]
        outputs = f(x).reshape(len(x), -1)
        m = len(x)
        if self.task == "classifier":
            y = np.argmax(outputs, axis=1).astype(np.int64)
            src = np.argmax(f(a["control"]).reshape(m, -1), axis=1).astype(np.int64)
        else:
            y = src = np.full(m, -1, np.int64)
        params = self.params()
        params["batch_size"] = self.batch_size or _DEFAULT_BATCH
        meta = {
            "method": self.name,
            "statistic": self.statistic,
            "params": params,
            "strategy": "-",
            "task": self.task,
            "n": m,
            "n_requested": n,
            "n_converged": m,
            "dataset": dataset,
            "input_shape": list(probe.input_shape),
            "input_range": None if domain is None else list(domain),
            "output_size": int(outputs.shape[1]),
            "epsilon": self.epsilon,
            "rounds": rounds,
            "rejected": rejected,
            "tolerance": C.TAFA_TOLERANCE,
            "relu_layers": [{"name": nm, "size": sz} for nm, sz in zip(probe.layers, probe.sizes)],
            "target": {
                "name": km.name,
                "source": str(model) if isinstance(model, (str, Path)) else "in memory",
                "weights_sha256": content_sha256(km),
            },
            "reconstruction": "TAFA as reconstructed from the seed (abstract, notes, references, appendix); see "
            "ipguard_tf/tafa/__init__.py",
            "versions": versions(),
            "created": utc_now(),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        if self.task == "classifier":
            meta["num_classes"] = int(outputs.shape[1])
        distance = np.abs(a["preact"]).astype(np.float32)
        return Fingerprint(
            x=x,
            y=y,
            source=src,
            target=np.full(m, -1, np.int64),
            iterations=np.full(m, 0, np.int64),
            objective=distance,
            converged=np.ones(m, bool),
            distortion=np.linalg.norm((x - a["control"]).reshape(m, -1), axis=1),
            metadata=meta,
            outputs=outputs,
            control=a["control"],
            normal=a["normal"],
            neuron=a["neuron"],
            layer=a["layer"],
            pattern=a["pattern"],
            slopes=one_sided_slopes(f, x, a["normal"], self.epsilon),
        )


def with_slopes(fingerprint: Fingerprint, target: Any) -> Fingerprint:
    """``fingerprint`` with the target's one-sided slopes (:func:`~ipguard_tf.core.tafa_statistics.one_sided_slopes`,
    the fingerprint's epsilon) added, for files made before the slope agreement existed; the points and every
    other record are unchanged, and the target must be the fingerprinted model (its content hash is checked)."""
    import dataclasses

    if fingerprint.slopes is not None:
        return fingerprint
    km = keras_model_of(target)
    want = fingerprint.metadata.get("target", {}).get("weights_sha256")
    if want is not None and content_sha256(km) != want:
        raise ModelError("the model given is not the fingerprinted target (its weights' hash differs)")
    eps = float(fingerprint.metadata.get("epsilon", C.TAFA_EPSILON))
    meta = dict(fingerprint.metadata, slopes_added=utc_now())
    return dataclasses.replace(
        fingerprint,
        metadata=meta,
        sha256=None,
        slopes=one_sided_slopes(keras_outputs(km), fingerprint.x, fingerprint.normal, eps),
    )


def suspect_outputs(fingerprint: Fingerprint, suspect: Any, batch_size: int = 512) -> OutputFn:
    """A batch function of ``suspect``'s outputs, checked against the fingerprint's output size
    (:func:`~ipguard_tf.models.outputs.checked_outputs`)."""
    return checked_outputs(suspect, fingerprint.x[:1], fingerprint.metadata.get("output_size"), batch_size)


def verify_all(fingerprint: Fingerprint, suspect: Any, batch_size: int = 512) -> Dict[str, float]:
    """Every TAFA statistic of the suspect (:mod:`ipguard_tf.core.tafa_statistics`): ``bend_rate``,
    ``scaled_bend_rate``, ``output_agreement``, ``output_correlation`` and, where the fingerprint holds the
    target's slopes (files made since they exist, or :func:`with_slopes`), ``slope_agreement``."""

    f = suspect_outputs(fingerprint, suspect, batch_size)
    fp = fingerprint
    eps = float(fp.metadata.get("epsilon", C.TAFA_EPSILON))
    out = {
        "bend_rate": bend_rate(f, fp.x, fp.control, fp.normal, eps),
        "scaled_bend_rate": scaled_bend_rate(f, fp.x, fp.control, fp.normal),
        "output_agreement": output_agreement(f, fp.x, fp.outputs, fp.metadata.get("task") == "classifier"),
        "output_correlation": output_correlation(f, fp.x, fp.outputs),
    }
    if fp.slopes is not None:
        out["slope_agreement"] = slope_agreement(f, fp.x, fp.normal, fp.slopes, eps)
    return out


def verify_statistic(fingerprint: Fingerprint, suspect: Any, batch_size: int = 512) -> float:
    """The suspect's value of the statistic the TAFA fingerprint is verified by (its metadata's ``statistic``:
    the output correlation or the bend rate, :mod:`ipguard_tf.core.statistics`); ``suspect`` as
    :func:`suspect_outputs` takes it."""
    stat = statistic_of(fingerprint)
    if not stat.task_agnostic:
        raise ModelError(f"a TAFA fingerprint is verified by one of {', '.join(C.TAFA_STATISTICS)}, not {stat.name!r}")
    return stat.value(fingerprint, suspect_outputs(fingerprint, suspect, batch_size))
