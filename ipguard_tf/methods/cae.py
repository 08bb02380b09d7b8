"""CAE: conferrable adversarial examples (Lukas, Zhang, Kerschbaum, "Deep Neural Network Fingerprinting by
Conferrable Adversarial Examples", ICLR 2021), the CAE column of the SAC appendix (``../shared/papers/003_*``).

A *conferrable* example x' transfers, with the source model M's label, to M's surrogates (models derived from
M) but not to reference models (trained independently for the same task). The defender holds an ensemble of
surrogates S_1..S_s (it extracted them from its own source, on its own data) and references R_1..R_r (trained
on the true labels); here they are zoo members of roles ``surrogate`` and ``reference``
(:func:`ipguard_tf.zoo.sac.cae_plan`), never the evaluated suspects.

**Conferrable Ensemble Method (CEM)** per example x0 (an owner example the source labels correctly):

* ensemble output, with dropout over members: E(x) = S̄(x) ⊙ (1 - R̄(x)), where S̄ and R̄ average the softmax
  outputs of the members kept at this step (each left out with probability ``dropout`` = 0.3; should a group
  lose all its members, all of them are kept for the step instead: the implementations divide by zero there);
* loss (the paper's Eq.): alpha H(1, max_t E(x')_t) - beta H(M(x0), M(x')) + gamma H(M(x'), S̄(x')), with H the
  cross-entropy (the first term a binary one with target 1; probabilities clipped to [1e-7, 1] as the Keras
  implementation does, which bounds the second, maximised, term);
* Adam on x' (``learning_rate``), ``max_iter`` steps, after each step x' is projected into the L-infinity ball
  of radius ``epsilon`` around x0 and into [0, 1];
* filter: keep x' when the source's label there differs from x0's true label (the example is adversarial to
  M) and its conferrability score, E(x') with *all* members and no dropout, at the source's label, is at least
  ``tau`` (the implementations take the maximum over classes, the same value whenever the ensemble's top class
  is the source's; the score at the recorded label is what verification relies on).

Every hyperparameter and its source is in :mod:`ipguard_tf.core.constants` (``CAE_*``). The fingerprint is the first
``n`` kept examples in the seeded order of the owner's data, labelled by M; candidates are searched in rounds
of ``batch_size`` (default n) until n pass or ``max_candidates_per_point * n`` were searched (fewer than n
points then, with a warning). Verification is the matching rate ("CAEAcc"): the fraction of x' a suspect labels
as M does (:data:`~ipguard_tf.core.registry.MATCHING_RATE`).

Randomness: the seed orders the owner's examples; each step's dropout draws from (seed, round, step), so a
fingerprint is reproducible for a seed and a batch size (the draws cover a round's examples together).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from ipguard_tf.core.constants import N_POINTS
from ipguard_tf.core.errors import DataError, ModelError, ParameterError
from ipguard_tf.core.fingerprint import Fingerprint
from ipguard_tf.io.checkpoint import StateFile, content_key
from ipguard_tf.methods.base import _N, FingerprintMethod, SearchOutput
from ipguard_tf.methods.search import AdamSearch, SearchProblem
from ipguard_tf.models.classifier import Classifier, as_classifier

log = logging.getLogger(__name__)

_CLIP = 1e-7


def ensemble_output(
    surrogate_probs: tf.Tensor,
    reference_probs: tf.Tensor,
    keep_s: Optional[tf.Tensor] = None,
    keep_r: Optional[tf.Tensor] = None,
) -> Tuple[tf.Tensor, tf.Tensor]:
    """CEM's E = S̄ ⊙ (1 - R̄) and S̄, from member probabilities [B, members, C] and optional keep masks
    [B, members] (1 = kept; a row without any kept member keeps them all)."""

    def mean(p, keep):
        if keep is None:
            return tf.reduce_mean(p, axis=1)
        keep = tf.where(tf.reduce_sum(keep, axis=1, keepdims=True) > 0, keep, tf.ones_like(keep))
        return tf.reduce_sum(p * keep[:, :, None], axis=1) / tf.reduce_sum(keep, axis=1, keepdims=True)

    s_bar = mean(surrogate_probs, keep_s)
    return s_bar * (1.0 - mean(reference_probs, keep_r)), s_bar


def conferrability(source_labels: np.ndarray, surrogate_probs: np.ndarray, reference_probs: np.ndarray) -> np.ndarray:
    """Each example's conferrability score at the source's label: E with all members (no dropout)."""
    e, _ = ensemble_output(tf.constant(surrogate_probs), tf.constant(reference_probs))
    return np.take_along_axis(e.numpy(), np.asarray(source_labels).reshape(-1, 1), axis=1)[:, 0]


class CAEProblem(SearchProblem):
    """CEM's loss on x' (see the module docstring). The search's model function returns, per example, the
    source's logits followed by every member's probabilities; the source's output at x0 comes from ``ctx``'s
    x0 through ``source_fn`` (no gradient)."""

    stop_on_success = False  # every example runs its max_iter steps, as in the implementations

    def __init__(
        self,
        source_fn,
        n_surrogates: int,
        n_references: int,
        num_classes: int,
        *,
        epsilon: float,
        alpha: float,
        beta: float,
        gamma: float,
        dropout: float,
        tau: float,
        seed: int,
    ) -> None:
        self._source_fn = source_fn  # the source's logits at x0 (in vars(): the search's graph cache key has it too)
        self.n_s, self.n_r, self.c = int(n_surrogates), int(n_references), int(num_classes)
        self.epsilon, self.alpha, self.beta, self.gamma = float(epsilon), float(alpha), float(beta), float(gamma)
        self.dropout, self.tau, self.seed = float(dropout), float(tau), int(seed)

    def project(self, w, ctx):
        x0 = ctx["x0"]
        return tf.clip_by_value(tf.clip_by_value(w, x0 - self.epsilon, x0 + self.epsilon), 0.0, 1.0)

    def split(self, out: tf.Tensor):
        c, s = self.c, self.n_s
        out = tf.reshape(out, [-1, 1 + self.n_s + self.n_r, c])
        return out[:, 0], out[:, 1 : 1 + s], out[:, 1 + s :]

    def loss(self, x, out, ctx):
        logits, sp, rp = self.split(out)
        keep_s = keep_r = None
        if "it" in ctx and self.dropout > 0:
            b = tf.shape(x)[0]
            rnd = tf.cast(ctx["const"][0], tf.int64)  # the round (generate() passes it as every point's const)
            seed = tf.stack([self.seed * 1_000_003 + rnd, tf.cast(ctx["it"], tf.int64)])
            u = tf.random.stateless_uniform(tf.stack([b, self.n_s + self.n_r]), seed=seed)
            keep = tf.cast(u >= self.dropout, tf.float32)
            keep_s, keep_r = keep[:, : self.n_s], keep[:, self.n_s :]
        e, s_bar = ensemble_output(sp, rp, keep_s, keep_r)
        p = tf.nn.softmax(logits)
        p0 = tf.stop_gradient(tf.nn.softmax(self._source_fn(ctx["x0"])))
        e_max = tf.reduce_max(e, axis=1)
        term1 = -tf.math.log(tf.clip_by_value(e_max, _CLIP, 1.0))  # H(1, max_t E_t)
        term2 = -tf.reduce_sum(p0 * tf.math.log(tf.clip_by_value(p, _CLIP, 1.0)), axis=1)  # H(M(x0), M(x'))
        term3 = -tf.reduce_sum(p * tf.math.log(tf.clip_by_value(s_bar, _CLIP, 1.0)), axis=1)  # H(M(x'), S̄(x'))
        loss = self.alpha * term1 - self.beta * term2 + self.gamma * term3
        label = tf.argmax(logits, axis=1, output_type=tf.int32)
        score = tf.gather(e, label, batch_dims=1)
        success = tf.logical_and(tf.not_equal(label, ctx["src"]), score >= self.tau)
        return loss, success, -score


def _probs_fn(clf: Classifier):
    return lambda x: tf.nn.softmax(clf.logits(x))


#: an ensemble given to CAE: models (named ``surrogate_0``, ...) or a mapping name -> model
Ensemble = Union[Sequence[Any], Mapping[str, Any]]


def _named(models: Ensemble, role: str) -> List[Tuple[str, Any]]:
    if isinstance(models, Mapping):
        return list(models.items())
    return [(f"{role}_{i}", m) for i, m in enumerate(models)]


class CAE(FingerprintMethod):
    """CAE (see the module docstring). Hyperparameters (registry, ``CAE_*`` in :mod:`ipguard_tf.core.constants`):
    ``zoo``, ``epsilon``, ``alpha``, ``beta``, ``gamma``, ``dropout``, ``tau``, ``learning_rate``, ``max_iter``,
    ``max_candidates_per_point``, ``segment``, ``seed``, ``batch_size``.

    The ensemble: the runtime options ``surrogates=`` and ``references=`` (models or classifiers, or mappings
    name -> model). ``zoo`` names the zoo they come from (recorded); the zoo layer loads its surrogate and
    reference members (:func:`ipguard_tf.zoo.members.cae_ensemble`, rebuilt if absent), which the command line
    and the sweeps do for ``--cae-zoo`` (:func:`ipguard_tf.zoo.members.method_inputs`)."""

    name = "cae"
    zoo: Optional[str]
    epsilon: float
    alpha: float
    beta: float
    gamma: float
    dropout: float
    tau: float
    learning_rate: float
    max_iter: int
    max_candidates_per_point: int
    segment: int

    def __init__(
        self,
        *,
        surrogates: Optional[Ensemble] = None,
        references: Optional[Ensemble] = None,
        ensemble_target_sha256: Optional[str] = None,
        progress: bool = False,
        distribute: Any = None,
        **params: Any,
    ) -> None:
        super().__init__(progress=progress, distribute=distribute, **params)
        if self.dropout >= 1.0:
            raise ParameterError(f"dropout must be below 1 (it would leave every member out), got {self.dropout}")
        if (surrogates is None) != (references is None):
            raise ParameterError("CAE needs both surrogates and references (or neither, with zoo)")
        if surrogates is not None and (len(surrogates) == 0 or len(references) == 0):
            raise ParameterError("CAE needs at least one surrogate and one reference model")
        if surrogates is None and self.zoo is None:
            raise ParameterError(
                "CAE needs its surrogate and reference models: give zoo (--cae-zoo), a zoo with "
                "CAE members, or surrogates= and references="
            )
        self._ensemble = (
            None if surrogates is None else (_named(surrogates, "surrogate"), _named(references, "reference"))
        )
        self._ensemble_target_sha256 = ensemble_target_sha256

    @property
    def strategy(self) -> str:
        return "conferrable"

    def _search(self, clf, plan, x0, src, tgt, *, checkpoint=None) -> SearchOutput:  # pragma: no cover
        raise NotImplementedError("CAE runs its own rounds in generate()")

    def ensemble(self, clf: Classifier) -> Tuple[List[Classifier], List[Classifier], Dict[str, Any]]:
        """The surrogate and reference classifiers and a record of them (names, SHA-256, zoo). An ensemble made
        for another target (``ensemble_target_sha256``, the zoo's target, differs from ``clf``'s weights) gives a
        warning: its surrogates were derived from that target."""
        if self._ensemble is None:  # a zoo was named but its members were not given
            raise DataError(
                f"CAE zoo {self.zoo}: its ensemble was not loaded; pass surrogates= and references= "
                "(ipguard_tf.zoo.members.cae_ensemble loads them from a zoo folder)"
            )
        sha = self._ensemble_target_sha256
        if sha and clf.weights_sha256 and sha != clf.weights_sha256:
            log.warning(
                "CAE: the model fingerprinted is not the target of %s (weights differ); its surrogates "
                "were derived from that target, so the examples may not be conferrable for this model",
                self.zoo or "the ensemble",
            )
        s, r = self._ensemble
        surr = [as_classifier(m, name=name) for name, m in s]
        refs = [as_classifier(m, name=name) for name, m in r]
        record = {
            "zoo": self.zoo,
            "surrogates": [{"name": c.name, "weights_sha256": c.weights_sha256} for c in surr],
            "references": [{"name": c.name, "weights_sha256": c.weights_sha256} for c in refs],
        }
        return surr, refs, record

    def generate(
        self,
        model: Any,
        n: int = N_POINTS,
        train_x: Optional[np.ndarray] = None,
        *,
        train_y: Optional[np.ndarray] = None,
        dataset: Optional[str] = None,
        checkpoint: Optional[Union[str, Path]] = None,
        checkpoint_every: float = 60.0,
    ) -> Fingerprint:
        """Up to ``n`` conferrable examples of ``model`` from the owner's examples ``train_x`` with their true
        labels ``train_y`` (see the module docstring). ``checkpoint``: a file where the kept examples are saved
        after every round; a call with the same arguments after an interruption resumes after the last round."""
        n = _N.check(n)
        clf = as_classifier(model)
        if not clf.has_logits:
            raise ModelError(f"cae needs a model with logits; {clf.name} only returns labels")
        if train_x is None or len(train_x) == 0:
            raise DataError("CAE needs the owner's data (give --dataset, or train_x to generate)")
        if train_y is None or len(train_y) != len(train_x):
            raise DataError(
                "CAE needs the true labels of the owner's data (train_y): it starts from examples the "
                "model labels correctly and keeps those it then mislabels"
            )
        t0 = time.perf_counter()
        surr, refs, ens_record = self.ensemble(clf)
        x_all = clf.check_inputs(np.asarray(train_x), "owner images")
        y_all = np.asarray(train_y).reshape(-1).astype(np.int64)
        c = int(clf.predict_logits(x_all[:1]).shape[1])
        for m in surr + refs:
            if (
                m.input_shape is not None
                and clf.input_shape is not None
                and tuple(m.input_shape) != tuple(clf.input_shape)
            ):
                raise ModelError(
                    f"CAE ensemble member {m.name} takes inputs {m.input_shape}, the model {clf.input_shape}"
                )
            mc = int(m.predict_logits(x_all[:1]).shape[1])
            if mc != c:
                raise ModelError(f"CAE ensemble member {m.name} has {mc} classes, the model {c}")
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(x_all))
        budget = min(len(order), self.max_candidates_per_point * n)
        members_fns = [clf.logits] + [_probs_fn(m) for m in surr + refs]

        def out_fn(x):
            return tf.concat([f(x) for f in members_fns], axis=1)

        params = self.params()
        problem = CAEProblem(
            clf.logits,
            len(surr),
            len(refs),
            c,
            epsilon=self.epsilon,
            alpha=self.alpha,
            beta=self.beta,
            gamma=self.gamma,
            dropout=self.dropout,
            tau=self.tau,
            seed=self.seed,
        )
        search = AdamSearch(
            out_fn,
            problem,
            learning_rate=self.learning_rate,
            max_iter=self.max_iter,
            segment=self.segment,
            progress=self.progress,
            desc="CAE",
        )
        bs = self.batch_size or n
        state = _RoundState.load(checkpoint, self._run_id(clf, ens_record, n, order, y_all))
        while state.kept < n and state.searched < budget:
            idx = order[state.searched : min(state.searched + bs, budget)]
            state.searched += len(idx)
            x0, y0 = x_all[idx], y_all[idx]
            ok = clf.predict_labels(x0) == y0  # start from examples the model labels correctly
            if ok.any():
                x0, y0 = x0[ok], y0[ok]
                r = search.run(x0, {"src": y0, "tgt": y0, "x0": x0, "const": np.full(len(x0), state.rounds)})
                x = np.clip(r.x, 0.0, 1.0).astype(np.float32)
                lab = clf.predict_labels(x)
                score = conferrability(lab, *self._member_probs(x, surr, refs))
                good = (lab != y0) & (score >= self.tau) & ~r.nonfinite & np.isfinite(x.reshape(len(x), -1)).all(1)
                state.add(x[good], x0[good], y0[good], lab[good], score[good], r.iterations[good], r.loss[good])
            state.rounds += 1
            state.save()
            log.info(
                "CAE round %d: %d of %d candidates searched, %d kept", state.rounds, state.searched, budget, state.kept
            )
        if state.kept == 0:
            raise ModelError(
                f"cae: none of the {state.searched} candidate examples searched passed the filter (tau "
                f"{self.tau:g}); raise --cae-candidates or --epsilon, or lower --cae-tau"
            )
        if state.kept < n:
            log.warning(
                "cae: %d of the %d candidate examples searched passed the filter (tau %.2f); the fingerprint "
                "has %d points, not %d",
                state.kept,
                state.searched,
                self.tau,
                state.kept,
                n,
            )
        k = min(n, state.kept)
        x, x0, y0, lab, score, iters, loss = (a[:k] for a in state.arrays())
        meta = self._metadata(
            clf,
            params,
            n=k,
            n_converged=k,
            num_classes=c,
            dataset=dataset,
            seconds=time.perf_counter() - t0,
            point_shape=x_all.shape[1:],
        )
        meta.update(
            n_requested=n,
            candidates_searched=int(state.searched),
            candidates_kept=int(state.kept),
            conferrability=[round(float(v), 6) for v in score],
            ensemble=ens_record,
            nonfinite_points=[],
        )
        distortion = np.sqrt(np.sum((x - x0).reshape(k, -1).astype(np.float64) ** 2, axis=1))
        return Fingerprint(
            x=x,
            y=lab.astype(np.int64),
            source=y0.astype(np.int64),
            target=lab.astype(np.int64),
            iterations=iters.astype(np.int64),
            objective=loss.astype(np.float32),
            converged=np.ones(k, bool),
            distortion=distortion,
            metadata=meta,
        )

    @staticmethod
    def _member_probs(x: np.ndarray, surr: List[Classifier], refs: List[Classifier]) -> Tuple[np.ndarray, np.ndarray]:
        def probs(ms):
            return np.stack([tf.nn.softmax(m.predict_logits(x)).numpy() for m in ms], axis=1)

        return probs(surr), probs(refs)

    def _run_id(self, clf, ens_record, n, order, y_all) -> str:

        return content_key(clf.weights_sha256 or clf.name, self.name, self.params(), ens_record, n, order, y_all)


class _RoundState:
    """The kept examples after each round, saved to a :class:`~ipguard_tf.io.checkpoint.StateFile` (resume after
    a round): arrays the kept examples' fields, scalars the candidates searched and the rounds done."""

    FIELDS = ("x", "x0", "y0", "label", "score", "iterations", "loss")
    SCHEMA = "ipguard_tf.cae-rounds/1"

    def __init__(self, store: Optional[StateFile] = None) -> None:
        self.store = store
        self.searched = 0
        self.rounds = 0
        self.parts: Dict[str, List[np.ndarray]] = {f: [] for f in self.FIELDS}

    @property
    def kept(self) -> int:
        return int(sum(len(a) for a in self.parts["x"]))

    def add(self, *arrays: np.ndarray) -> None:
        for f, a in zip(self.FIELDS, arrays):
            self.parts[f].append(np.asarray(a))

    def arrays(self) -> Tuple[np.ndarray, ...]:
        out = []
        for f in self.FIELDS:
            ps = [p for p in self.parts[f] if len(p)]
            out.append(np.concatenate(ps) if ps else np.zeros((0,), np.float32))
        return tuple(out)

    @classmethod
    def load(cls, path: Optional[Union[str, Path]], run_id: str) -> "_RoundState":
        """The state saved in ``path`` (a fresh one when ``path`` is None or does not exist yet); a file of
        another run or an unreadable one raises a one-line :class:`~ipguard_tf.io.checkpoint.CheckpointError`."""
        store = (
            None
            if path is None
            else StateFile(
                path,
                run_id,
                "CAE checkpoint",
                schema=cls.SCHEMA,
                hint="give another file",
                other="another CAE run (model, ensemble, settings, seed or data differ)",
            )
        )
        st = cls(store)
        saved = store.load() if store is not None else None
        if saved is None:
            return st
        arrays, scalars = saved
        try:
            st.searched, st.rounds = int(scalars["searched"]), int(scalars["rounds"])
            if arrays:
                st.add(*(arrays[f] for f in cls.FIELDS))
        except (KeyError, TypeError, ValueError):
            raise store.unreadable("fields missing") from None
        log.info("CAE: resumed after round %d (%d searched, %d kept)", st.rounds, st.searched, st.kept)
        return st

    def save(self) -> None:
        """Write the state to its file (nothing without one)."""
        if self.store is not None:
            self.store.save(
                dict(zip(self.FIELDS, self.arrays())) if self.kept else {},
                {"searched": self.searched, "rounds": self.rounds},
            )
