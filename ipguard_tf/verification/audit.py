"""Auditing a fingerprint (issue 34): are its points the target's own search results?

``ipguard verify`` trusts the fingerprint file: whoever wrote it chose the points, and a file of points that the
target A and an unrelated model B label alike (natural images, images picked for agreement, points optimised on
both models, a calibration made up and packed in) makes B "a copy of A". :func:`audit` re-derives what only A and
the seed determine, so that a judge holding A can tell such a file from A's own fingerprint:

1. **the model**: A's content hash (``metadata['target']['weights_sha256']``) must be the one given; a mismatch
   fails the audit and is said first;
2. **the starts** (``metadata['starts']``, :meth:`~ipguard_tf.methods.base.FingerprintMethod.derive_starts`): drawn
   again from the recorded seed, uniformly or from the training array whose SHA-256 and length the file records
   (the judge supplies that array; a different one fails); A's label at each start must be the file's source
   label i, and the seed's draw its target label j. The starts are never read from the file: a file could
   otherwise declare each point its own start;
3. **every point, cheaply**: A labels the stored point y; a point flagged converged meets its method's goal and the
   search records are possible (the method says: :meth:`~ipguard_tf.methods.base.FingerprintMethod.goal_failures`,
   ``claim_failures``; IPGuard: Eq. 5 at the recorded k, an unconverged point ran the whole budget); stored class
   scores (SAC) are A's; the recorded distortion is the distance from the derived start;
4. **m points, replayed** (``points``, drawn with a seed the judge chooses; default all): the method's search is
   run again on A from the derived start (:meth:`~ipguard_tf.methods.base.FingerprintMethod.replay`) and must end
   where the stored point is, within the tolerance below.

The verdict passes only when all of it holds for every audited point; :attr:`AuditReport.exit_code` is 0 then and
3 otherwise (the command's exit status; 2 stays the one-line user error). A fingerprint that records no starts (made
before they were recorded), a method whose points depend on more than A (CAE's surrogates, TAFA's probes) or a
non-differentiable A (TFLite, ONNX) for a method that searches with A's gradient (the search cannot run; labels
are still checked) never passes. Methods that need no gradient (random points, AKH) are made on such a file and
replay on it.

**The tolerance, measured.** On one machine a replay of all points in their original batches is bit-identical,
also in another process (Fashion-MNIST target, 60 points, TR/TL at k = 1 and 10: 240 of 240 points identical; the
test makes the fingerprint in a subprocess). A replay of a subset changes the batch, and TensorFlow's kernels round a
batch of another size differently; other CPUs and GPUs round differently again (``experiments/results/cross_machine``:
no IPGuard fingerprint was bit-identical between an Intel and an AMD machine, converged counts differed by up to 2
of 100). A 1,000-step Adam search amplifies such rounding: Adam's step is about ``lr`` per coordinate whatever the
gradient's size, so a coordinate whose gradient is near zero (a black background pixel of a training image) walks
wherever the last bits of its gradient point. Measured on a 2-core Intel Xeon (TensorFlow CPU), replaying against
the stored points; ``rel`` = L2 distance between replayed and stored point / L2 length of the replay's search (from
its start), its largest value over the points:

* batch split in two (same machine): tiny 8x8 CNN (k = 0.05, 300 iterations) rel <= 0.008; Fashion-MNIST CNN
  (``pretrained/fashion_mnist/target.keras``, 1,000 iterations, k = 1, 50 points per strategy) rel <= 0.02;
* every weight x (1 + 1e-7 or 1e-6 N(0, 1)), Fashion-MNIST, k = 1: training-image starts (TR, TL) rel <= 0.37,
  uniform starts (RR, RL) rel <= 0.06; tiny CNN rel <= 0.02;
* the same weights run by other kernels (``TF_ENABLE_ONEDNN_OPTS=0`` in another process, the closest emulation of
  another machine available here), Fashion-MNIST, 60 points: k = 1 TR 0.43, TL 0.42; k = 10 TR 0.65, TL 0.65 (99th
  percentile 0.54-0.60; median 0.04-0.13); RR 0.05, RL 0.013 (k = 1, 50 points).

2-4 % of the training-image searches converge at another iteration or not at all (iteration counts differing by up
to 776) and then end labelled otherwise by A. A's label at the stored points and Eq. 5 there held under every change
(the searches freeze with a margin).

Hence a replayed point is **consistent** when

* it is *identical* (L-inf at most :data:`IDENTICAL_LINF`), or
* *close*: ``rel`` at most :data:`REL_TOL` = 1.0 for starts at training examples (the stored point is no farther
  from A's own replayed point than that point is from its start; 1.5 times the largest drift measured), or
  :data:`REL_TOL_UNIFORM` = 0.1 for uniform starts (1.6 times), or
* (IPGuard only, for a point whose replay converged otherwise than the file claims) *close to its claimed
  trajectory*: the search is run again for this point as the file says it went, stopping at the recorded
  iteration and freezing on success when the point is flagged converged, running the whole budget without freezing
  when it is not (the claims are checked on their own: Eq. 5 holds at a converged point, an unconverged one ran the
  whole budget), and ``rel`` to that replay is at most the tolerance. This follows A's own trajectory from the
  derived start only.

**What the tolerance leaves a forger.** A forger who knows the seed, A and the suspect B can move each of A's own
points towards B's agreement, keeping Eq. 5 on A, by as much as the tolerance allows. Measured (Fashion-MNIST
target, B an independent model of the same architecture, ``pretrained/fashion_mnist/same_arch_seed01.keras``;
converged points that B labels like A, before -> within rel 0.05 / 0.1 / 0.2 / 0.5 / 1.0): TL k = 1: 0 of 46 ->
0 / 0 / 13 / 42 / 46; TR k = 1: 3 of 55 -> 7 / 8 / 20 / 53 / 55; TL k = 10: 16 of 37 -> 21 / 29 / 37 / 37 / 37; RR
k = 1: 5 of 56 -> 5 / 6 / 11 / 42 / 56. So the cross-platform tolerance of training-example starts rules out points
that are not from A's search (natural or selected images, searches from other starts, crude optimisation: all
rejected in ``tests/test_audit.py``) but not A's own points moved within it; uniform starts, whose replays drift
little, leave almost nothing (one point of 56 at 0.1). Only a bit-identical replay is conclusive against a forger
who knew B: on the fingerprint's own platform (``metadata['platform']``) a replay of all points in their original
batches is bit-identical, and ``strict`` demands it. A replay of part of the batches is not, even there (batches of
another size round otherwise: training-example starts drifted up to rel 0.35 with 1 or 5 points replayed, uniform
starts 0.001). The report counts identical, close and trajectory points and says which of these it was.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from math import comb
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ipguard_tf.core import registry
from ipguard_tf.core.calibration import calibration_of
from ipguard_tf.core.checks import check_number
from ipguard_tf.core.errors import DataError, IPGuardError, ParameterError
from ipguard_tf.core.fingerprint import Fingerprint
from ipguard_tf.io.env_info import machine, platform_key
from ipguard_tf.methods.base import STARTS_GENERATOR, FingerprintMethod, array_sha256
from ipguard_tf.models.classifier import Classifier, as_classifier

log = logging.getLogger(__name__)

#: a replayed point this close to the stored one (L-inf, [0, 1] inputs) is the same point up to float32 rounding
IDENTICAL_LINF = 1e-5
#: the largest L2 distance between a replayed and a stored point, as a fraction of the replay's search length, that
#: rounding is taken to explain, for starts at training examples (module docstring: up to 0.65 measured) ...
REL_TOL = 1.0
#: ... and for uniform starts (up to 0.06 measured)
REL_TOL_UNIFORM = 0.1
#: fractions f of foreign points for which the report states the chance that an m-point audit misses them all
FOREIGN_FRACTIONS = (0.05, 0.1, 0.5)
#: points listed by name in the report
SHOWN_FAILURES = 5

#: exit status of ``ipguard audit`` when the fingerprint is not shown to be the model's own
EXIT_NOT_OWN = 3


@dataclass
class PointAudit:
    """One point: ``status`` ``identical``, ``close``, ``trajectory`` (close to its claimed trajectory), ``checked``
    (not replayed; its cheap checks passed) or ``inconsistent``; ``reasons`` why not consistent."""

    index: int
    status: str
    reasons: List[str] = field(default_factory=list)
    linf: Optional[float] = None
    rel: Optional[float] = None

    @property
    def consistent(self) -> bool:
        return not self.reasons

    def as_dict(self) -> Dict[str, Any]:
        return {"index": self.index, "status": self.status, "reasons": self.reasons, "linf": self.linf, "rel": self.rel}


@dataclass
class AuditReport:
    """What :func:`audit` found. ``verdict``: ``pass``, ``fail``, ``not replayable`` or ``incomplete`` (the model
    cannot run the search); ``problems``: file-level findings, the most important first; ``points``: every point
    replayed or failing a check; ``replayed``: the indices replayed."""

    verdict: str
    problems: List[str]
    n: int
    method: str
    replayed: List[int]
    points: List[PointAudit]
    sample_seed: Optional[int]
    notes: List[str] = field(default_factory=list)
    calibration: Optional[str] = None
    strict: bool = False
    rel_tol: float = REL_TOL
    #: where the fingerprint was made, in a few words (None: not recorded)
    made_on: Optional[str] = None

    @property
    def exit_code(self) -> int:
        return 0 if self.verdict == "pass" else EXIT_NOT_OWN

    @property
    def identical(self) -> bool:
        """Whether every replayed point is bit-identical (up to :data:`IDENTICAL_LINF`) to the stored one."""
        return bool(self.replayed) and self.counts()["identical"] == len(self.replayed)

    @property
    def failures(self) -> List[PointAudit]:
        return [p for p in self.points if not p.consistent]

    def counts(self) -> Dict[str, int]:
        out = {"identical": 0, "close": 0, "trajectory": 0, "inconsistent": 0}
        for p in self.points:
            if p.index in self._replayed_set:
                out[p.status if p.consistent else "inconsistent"] += 1
        return out

    @property
    def _replayed_set(self) -> set:
        return set(self.replayed)

    def miss_chance(self, f: float) -> float:
        """The chance that a file in which a fraction ``f`` of the n points are not A's own passes this audit's
        sample of m points (all m drawn from the rest; exact, without replacement), at most (1-f)^m."""
        m, n = len(self.replayed), self.n
        bad = int(np.ceil(f * n))
        if m == 0 or bad == 0:
            return 1.0
        return comb(n - bad, m) / comb(n, m) if n - bad >= m else 0.0

    def as_dict(self) -> Dict[str, Any]:
        return {
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "problems": self.problems,
            "method": self.method,
            "n": self.n,
            "replayed": len(self.replayed),
            "sample_seed": self.sample_seed,
            "counts": self.counts(),
            "failures": [p.as_dict() for p in self.failures],
            "miss_chance": {str(f): self.miss_chance(f) for f in FOREIGN_FRACTIONS},
            "tolerance": {"identical_linf": IDENTICAL_LINF, "rel": self.rel_tol, "strict": self.strict},
            "identical": self.identical,
            "made_on": self.made_on,
            "calibration": self.calibration,
            "notes": self.notes,
        }

    def lines(self) -> List[str]:
        """The one-screen judgement."""
        out = list(self.problems)
        out += self.notes
        m = len(self.replayed)
        if m:
            c = self.counts()
            seed = f", sample seed {self.sample_seed}" if self.sample_seed is not None and m < self.n else ""
            out.append(
                f"replayed {m} of {self.n} points on the model{seed}: {c['identical']} identical, {c['close']} close, "
                f"{c['trajectory']} close to their claimed trajectory, {c['inconsistent']} inconsistent"
            )
            tol = (
                f"identical (L-inf <= {IDENTICAL_LINF:g})"
                if self.strict
                else f"identical (L-inf <= {IDENTICAL_LINF:g}) or within {self.rel_tol:.0%} of the search length (L2)"
            )
            out.append(f"tolerance: {tol}; see docs/defending.md")
        fails = self.failures
        if fails:
            out.append(f"{len(fails)} point(s) inconsistent; the first {min(len(fails), SHOWN_FAILURES)}:")
            for p in fails[:SHOWN_FAILURES]:
                more = f" (and {len(p.reasons) - 3} more)" if len(p.reasons) > 3 else ""
                out.append(f"  point {p.index}: {'; '.join(p.reasons[:3])}{more}")
        if self.calibration:
            out.append(self.calibration)
        if m and self.verdict == "pass":
            chances = ", ".join(
                f"f = {f:g}: {self.miss_chance(f):.2g} (<= {(1 - f) ** m:.2g})" for f in FOREIGN_FRACTIONS
            )
            out.append(
                f"a file with a fraction f of points not from the model's own search passes a {m}-point audit with "
                f"chance {chances}"
            )
        if self.verdict == "pass" and not self.identical:
            c = self.counts()
            where = f" ({self.made_on})" if self.made_on else ""
            out.append(
                f"{c['close'] + c['trajectory']} of the {m} replayed points are not bit-identical (another platform "
                "than the fingerprint's, or part of its batches replayed): this rules out points that are not from the "
                "model's search, not the model's own points moved within the tolerance towards a suspect; for a "
                f"conclusive audit replay all points with --strict on the fingerprint's platform{where}"
            )
        out.append(_verdict_line(self))
        return out


def _verdict_line(r: AuditReport) -> str:
    if r.verdict == "pass":
        how = "bit-identical" if r.identical else "within the tolerance"
        return (
            f"verdict: PASS: every audited point is the model's own search result from its seed ({how}; exit 0); "
            "this does not show that any suspect was derived from the model"
        )
    what = {
        "fail": "FAIL: the fingerprint is not the model's own",
        "not replayable": "NOT REPLAYABLE: the points cannot be shown to be the model's own",
        "incomplete": "INCOMPLETE: the search could not be replayed, so the points are not shown to be the model's own",
    }[r.verdict]
    return f"verdict: {what} (exit {EXIT_NOT_OWN})"


# ----------------------------------------------------------------------------------------------------------------
def _rel(a: np.ndarray, b: np.ndarray, start: np.ndarray) -> np.ndarray:
    n = len(a)
    d = np.linalg.norm((a - b).reshape(n, -1).astype(np.float64), axis=1)
    length = np.linalg.norm((b - start).reshape(n, -1).astype(np.float64), axis=1)
    return d / np.maximum(length, 1e-12)


def _linf(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b).reshape(len(a), -1).max(axis=1).astype(np.float64)


def _calibration_note(fp: Fingerprint, trust: bool) -> Optional[str]:
    rec = fp.metadata.get("calibration")
    if rec is None:
        return None
    if not trust:
        return (
            "calibration: the file holds one; ignored: its negatives were chosen by whoever made the file. A judge "
            "calibrates with independent models of their own ('ipguard calibrate --negatives DIR'); "
            "--trust-calibration shows it"
        )
    try:
        cal = calibration_of(fp)
    except IPGuardError as exc:
        return f"calibration: the file's calibration is unusable ({exc})"
    summary = cal.summary() if cal is not None else "none"
    return f"calibration (trusted on --trust-calibration, it is the claimant's): {summary}"


def choose_points(n: int, points: Optional[int], sample_seed: Optional[int]) -> Sequence[int]:
    """The indices of the ``points`` points to replay (all when None or >= n), drawn with ``sample_seed``."""
    if points is None or points >= n:
        return list(range(n))
    rng = np.random.default_rng(sample_seed)
    return sorted(int(i) for i in rng.choice(n, size=points, replace=False))


def audit(
    fingerprint: Fingerprint,
    model: Any,
    *,
    points: Optional[int] = None,
    train_x: Optional[np.ndarray] = None,
    train_y: Optional[np.ndarray] = None,
    sample_seed: Optional[int] = None,
    trust_calibration: bool = False,
    strict: bool = False,
    rel_tol: Optional[float] = None,
    progress: bool = False,
) -> AuditReport:
    """Audit ``fingerprint`` against ``model`` (the target A: a Keras model, a model file, or a
    :class:`~ipguard_tf.models.classifier.Classifier`; a file path or model is read with the fingerprint's
    ``input_scale``). See the module docstring for the checks.

    ``points``: how many points to replay (default all), drawn with ``sample_seed`` (default: fresh entropy, which
    the report states so that the audit can be repeated); ``train_x`` (and ``train_y``): the training array the
    starts were drawn from, for fingerprints with data starts (a :class:`DataError` when it is needed and not
    given); ``trust_calibration``: state the file's calibration instead of ignoring it; ``strict``: replay all
    points in their original batches and accept identical replays only (for a judge on the fingerprint's own
    platform); ``rel_tol``: the tolerance (default :data:`REL_TOL` for training-example starts,
    :data:`REL_TOL_UNIFORM` for uniform ones). Returns an :class:`AuditReport`."""
    fp = fingerprint
    meta = fp.metadata
    n = len(fp)
    method_name = meta.get("method")
    if points is not None and (isinstance(points, bool) or not isinstance(points, int) or points < 1):
        raise ParameterError(f"points must be a positive integer, got {points!r}")
    if strict:
        points = None
    if rel_tol is not None:
        rel_tol = check_number(rel_tol, "rel_tol", 0.0)
    elif isinstance(meta.get("starts"), dict) and meta["starts"].get("kind") == "uniform":
        rel_tol = REL_TOL_UNIFORM
    else:
        rel_tol = REL_TOL
    if sample_seed is None and points is not None and points < n:
        sample_seed = int(np.random.SeedSequence().entropy % (2**63))
    scale = meta.get("input_scale") or 1.0
    clf = model if isinstance(model, Classifier) else as_classifier(model, input_scale=float(scale))
    model_problems: List[str] = []  # said first
    problems: List[str] = []
    notes: List[str] = []
    cal_note = _calibration_note(fp, trust_calibration)
    made = meta.get("platform") if isinstance(meta.get("platform"), dict) else None
    made_on = None
    if made is not None:
        made_on = (
            f"{made.get('cpu')}, {made.get('cores')} cores, GPUs {made.get('gpus')}, "
            f"TensorFlow {made.get('tensorflow')}"
        )
        here = json.loads(json.dumps(dict(platform_key(), gpus=machine()["gpus"])))
        same = "this platform" if here == made else "another platform than this one"
        notes.append(f"platform: the fingerprint was made on {same} ({made_on})")

    def report(verdict: str, pts: List[PointAudit], replayed: Sequence[int] = ()) -> AuditReport:
        return AuditReport(
            verdict=verdict,
            problems=model_problems + problems,
            n=n,
            method=str(method_name),
            replayed=list(replayed),
            points=pts,
            sample_seed=sample_seed,
            notes=notes,
            calibration=cal_note,
            strict=strict,
            rel_tol=rel_tol,
            made_on=made_on,
        )

    # 1. the model's identity
    recorded = (meta.get("target") or {}).get("weights_sha256") if isinstance(meta.get("target"), dict) else None
    if not recorded:
        model_problems.append("model: the fingerprint records no content hash of the model it was made from")
    elif clf.weights_sha256 is None:
        model_problems.append(
            f"model: {clf.name} has no content hash to compare with the fingerprint's {recorded[:16]}"
        )
    elif clf.weights_sha256 != recorded:
        model_problems.append(
            f"model: the fingerprint was made from a model whose content SHA-256 is {recorded[:16]}..., the model "
            f"given ({clf.name}) has {clf.weights_sha256[:16]}...: it is not the fingerprint's model"
        )
    else:
        notes.append(f"model: content SHA-256 {recorded[:16]}... matches the fingerprint's")

    # the cheap label check needs nothing but the model
    labels = clf.predict_labels(fp.x)
    wrong_label = labels != fp.y

    def label_only(verdict: str) -> AuditReport:
        pts = [
            PointAudit(int(i), "inconsistent", [f"the model labels it {labels[i]}, the file says {fp.y[i]}"])
            for i in np.flatnonzero(wrong_label)
        ]
        notes.append(f"labels: the model labels {n - len(pts)} of the {n} stored points as the file says")
        return report(verdict, pts)

    # 2. can the points be replayed at all?
    try:
        spec = registry.get(method_name)
        cls = spec.load()
    except ParameterError:
        problems.insert(0, f"cannot be replayed: the method {method_name!r} is not one this version knows")
        return label_only("not replayable")
    if not cls.replayable():
        problems.insert(
            0,
            f"cannot be replayed: {spec.display} makes its points with more than the target and a seed "
            "(surrogate or reference models, its own probes), so no one holding the model can re-derive them",
        )
        return label_only("not replayable")
    starts_rec = meta.get("starts")
    if not isinstance(starts_rec, dict):
        problems.insert(0, "not replayable: made before starts were recorded (re-extract it with this version)")
        return label_only("not replayable")
    if starts_rec.get("generator") != STARTS_GENERATOR:
        problems.insert(0, f"not replayable: unknown starts generator {starts_rec.get('generator')!r}")
        return label_only("not replayable")
    params = meta.get("params")
    try:
        if not isinstance(params, dict):
            raise ParameterError(f"params is {params!r}")
        method: FingerprintMethod = registry.build(method_name, progress=progress, **params)
    except ParameterError as exc:
        problems.insert(0, f"not replayable: its recorded parameters are not valid ({exc})")
        return label_only("not replayable")
    if meta.get("n") not in (None, n):
        problems.append(f"points: the file holds {n} points, its metadata says {meta.get('n')} were made")
    if method.starts_kind() != starts_rec.get("kind"):
        problems.append(f"starts: recorded as {starts_rec.get('kind')!r}, the method's strategy draws them otherwise")

    # 3. the starts
    if method.starts_kind() == "data":
        want, want_len = starts_rec.get("data_sha256"), starts_rec.get("data_len")
        if train_x is None:
            raise DataError(
                f"the fingerprint's starts were drawn from a training array of {want_len} examples (SHA-256 "
                f"{str(want)[:16]}...): give it (--data or --dataset)"
            )
        got = array_sha256(train_x)
        if got != want or len(train_x) != want_len:
            problems.insert(
                0,
                f"starts: the training data given ({len(train_x)} examples, SHA-256 {got[:16]}...) is not the one the "
                f"fingerprint records ({want_len} examples, {str(want)[:16]}...): its starts cannot be re-derived",
            )
            return label_only("fail")
        if train_y is not None and starts_rec.get("labels_sha256") not in (
            None,
            array_sha256(np.asarray(train_y).reshape(-1)),
        ):
            problems.insert(0, "starts: the training labels given are not the ones the fingerprint records")
            return label_only("fail")
        notes.append(f"starts: {n} drawn from the seed out of the {want_len} training examples (SHA-256 matches)")
    else:
        notes.append(f"starts: {n} uniform points drawn from the seed {params.get('seed')}")
    if not clf.has_logits and not clf.has_scores:
        problems.insert(0, f"incomplete: {clf.name} gives labels only; the starts' labels cannot be re-derived")
        return label_only("incomplete")
    scores_fn = None if clf.has_logits else clf.predict_scores
    starts = method.derive_starts(clf, n, train_x, train_y, scores=scores_fn)
    x0 = starts.x0
    failures: Dict[int, List[str]] = {}

    def fail(i: int, why: str) -> None:
        failures.setdefault(int(i), []).append(why)

    for i in np.flatnonzero(starts.src != fp.source):
        fail(i, f"the model labels its start {starts.src[i]}, the file's source label is {fp.source[i]}")
    for i in np.flatnonzero(starts.tgt != fp.target):
        fail(i, f"the seed draws target label {starts.tgt[i]}, the file says {fp.target[i]}")
    for i in np.flatnonzero(wrong_label):
        fail(i, f"the model labels it {labels[i]}, the file says {fp.y[i]}")
    dist = np.sqrt(np.sum((fp.x - x0).reshape(n, -1).astype(np.float64) ** 2, axis=1))
    for i in np.flatnonzero(np.abs(dist - fp.distortion) > 1e-4 * (1.0 + dist)):
        fail(i, f"recorded distortion {fp.distortion[i]:.4g} is not its distance {dist[i]:.4g} from its start")

    # 4. the goal at converged points, the scores a statistic reads, the search records
    if clf.has_logits:
        goal = method.goal_failures(clf.predict_logits(fp.x), fp.source, fp.target) & fp.converged
        for i in np.flatnonzero(goal):
            fail(i, f"flagged converged, but {spec.display}'s goal does not hold there under the model")
    if fp.outputs is not None and fp.outputs.shape[1] == starts.scores0.shape[1]:
        scores = clf.predict_scores(fp.x)
        off = np.abs(scores - fp.outputs).max(axis=1) > 1e-3 * (1.0 + np.abs(scores).max(axis=1))
        for i in np.flatnonzero(off):
            fail(i, "the recorded outputs are not the model's scores at the point")
    put_back = np.isin(np.arange(n), meta.get("nonfinite_points") or [])
    for i in np.flatnonzero(method.claim_failures(fp.iterations, fp.converged, put_back)):
        fail(i, f"flagged unconverged after {fp.iterations[i]} iterations, short of the whole budget")

    # 5. the replay
    chosen = choose_points(n, points, sample_seed)
    pts: Dict[int, PointAudit] = {}
    if spec.needs_logits and not clf.has_logits:
        problems.insert(
            0,
            f"incomplete: {clf.name} is not differentiable (a TFLite or ONNX file), so the search cannot be replayed "
            "on it; its labels were checked. Audit with the model's Keras file",
        )
        chosen = []
    else:
        rep = method.replay(clf, n, train_x, train_y=train_y, indices=chosen, starts=starts)
        idx = np.asarray(chosen, np.int64)
        stored = fp.x[idx]
        linf = _linf(rep.x, stored)
        rel = _rel(stored, rep.x, x0[idx])
        status = np.where(linf <= IDENTICAL_LINF, "identical", np.where((not strict) & (rel <= rel_tol), "close", ""))
        # a point whose replay converged otherwise than the file claims (another iteration, or not at all) is
        # compared with its claimed trajectory too, where the method can follow one (IPGuard): rounding may have
        # moved the moment of convergence
        flipped = (rep.converged != fp.converged[idx]) | (rep.iterations != fp.iterations[idx])
        second = np.flatnonzero((status == "") & flipped) if not strict else np.zeros(0, np.int64)
        rel_c = np.full(len(idx), np.inf)
        linf_c = np.full(len(idx), np.inf)
        if len(second):
            j = idx[second]
            xc = method.claimed_search(clf, x0[j], starts.src[j], starts.tgt[j], fp.iterations[j], fp.converged[j])
            if xc is not None:
                rel_c[second] = _rel(stored[second], xc, x0[j])
                linf_c[second] = _linf(stored[second], xc)
        for k, i in enumerate(idx.tolist()):
            if status[k]:
                pts[i] = PointAudit(i, str(status[k]), linf=float(linf[k]), rel=float(rel[k]))
            elif linf_c[k] <= IDENTICAL_LINF or rel_c[k] <= rel_tol:
                pts[i] = PointAudit(i, "trajectory", linf=float(linf_c[k]), rel=float(rel_c[k]))
            else:
                why = (
                    f"its replay is not identical (L-inf {linf[k]:.3g}; --strict)"
                    if strict
                    else f"its replay ends {rel[k]:.0%} of the search length away (L-inf {linf[k]:.3g})"
                )
                if np.isfinite(rel_c[k]):
                    why += f", and {rel_c[k]:.0%} from its claimed trajectory ({fp.iterations[i]} iterations)"
                if not strict:
                    why += f"; tolerance {rel_tol:.0%}"
                pts[i] = PointAudit(i, "inconsistent", [why], float(linf[k]), float(rel[k]))
    for i, reasons in failures.items():
        p = pts.setdefault(i, PointAudit(i, "checked"))
        p.reasons = reasons + p.reasons
        p.status = "inconsistent"
    ordered = [pts[i] for i in sorted(pts)]
    if spec.needs_logits and not clf.has_logits:
        verdict = "incomplete"
    elif model_problems or problems or any(not p.consistent for p in ordered):
        verdict = "fail"
    else:
        verdict = "pass"
    notes.append(
        f"checked at all {n} points: the model's labels, the starts' source and target labels, the recorded "
        "distortion, and the method's goal at converged points"
    )
    return report(verdict, ordered, chosen)
