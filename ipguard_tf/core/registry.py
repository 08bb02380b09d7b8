"""The method registry: every fingerprinting method declared once, without importing TensorFlow.

A :class:`MethodSpec` says everything the rest of the project needs to know about a method: its CLI name and
display name, where its implementation lives (imported only when a method is built), its hyperparameters
(:class:`Param`: default, kind, range, command-line flag, help), which of them the paper sweeps (IPGuard's k,
FGSM/IGSM's epsilon, CW-L2's kappa), and the statistic a suspect is verified by
(:class:`~ipguard_tf.core.statistics.Statistic`). From the
spec derive: the method's constructor checks and ``params()`` (:class:`~ipguard_tf.methods.base.FingerprintMethod`),
the ``--method`` choices and hyperparameter options of ``ipguard extract`` (:mod:`ipguard_tf.cli.extract`), the sweep's
swept parameter (:mod:`ipguard_tf.evaluation.sweep`) and the report's names, orders and figures
(:mod:`ipguard_tf.evaluation.report`). The way ART derives ``get_params``/``set_params`` from an attack's
``attack_params``.

Adding a method = one module with a :class:`~ipguard_tf.methods.base.FingerprintMethod` subclass whose ``name``
is the spec's name, and one :func:`register` call (below, or in your own code before the method is used).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ipguard_tf.core.checks import check_number, range_text
from ipguard_tf.core.constants import (
    AKH_AUGMENT,
    CAE_ALPHA,
    CAE_BETA,
    CAE_DROPOUT,
    CAE_EPSILON,
    CAE_GAMMA,
    CAE_LEARNING_RATE,
    CAE_MAX_CANDIDATES_PER_POINT,
    CAE_MAX_ITER,
    CAE_TAU,
    CW_BINARY_SEARCH_STEPS,
    CW_INITIAL_CONST,
    DEFAULT_EPSILON,
    DEFAULT_INIT,
    DEFAULT_K,
    DEFAULT_LABEL,
    IGSM_ALPHA,
    INIT_STRATEGIES,
    LABEL_STRATEGIES,
    MAX_ITERATIONS,
    SAC_PATCH,
    TAFA_EPSILON,
    TAFA_REACH,
    TAFA_STATISTICS,
    TAFA_TASKS,
)
from ipguard_tf.core.errors import ParameterError
from ipguard_tf.core.statistics import BEND_RATE, MATCHING_RATE, OUTPUT_CORRELATION, SAC_DISTANCE, STATISTICS, Statistic

__all__ = [
    "Param",
    "MethodSpec",
    "Statistic",
    "STATISTICS",
    "MATCHING_RATE",
    "SAC_DISTANCE",
    "BEND_RATE",
    "OUTPUT_CORRELATION",
    "common_params",
    "register",
    "get",
    "names",
    "specs",
    "build",
    "cli_flags",
]


_UNBOUNDED = None


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its kind (``int``, ``float``, ``bool`` or ``str``), default, allowed values and flag.

    Args:
        name: the constructor keyword.
        kind: ``int``, ``float``, ``bool`` or ``str``.
        default: the default value (``None`` only with ``optional``).
        minimum, maximum: the allowed range (``None``: unbounded); ``strict`` makes the minimum exclusive.
        choices: the allowed values of a ``str`` parameter.
        optional: ``None`` is allowed (it means "chosen from the model", e.g. the learning rate by input size).
        cli: the flag of ``ipguard extract`` (``None``: not on the command line). Methods may share a flag
            (``--k`` is IPGuard's k and CW-L2's kappa).
        help: one line for ``--help`` (without the default).
        shown: how ``--help`` shows the default (``None``: the value itself; say what a ``None`` default means).
    """

    name: str
    kind: type
    default: Any
    minimum: Optional[float] = _UNBOUNDED
    maximum: Optional[float] = _UNBOUNDED
    strict: bool = False
    choices: Optional[Tuple[str, ...]] = None
    optional: bool = False
    cli: Optional[str] = None
    help: str = ""
    shown: Optional[str] = None

    def range_text(self) -> str:
        return range_text(self.minimum, self.maximum, low_open=self.strict)

    def check(self, value: Any) -> Any:
        """The value, converted to the parameter's kind; :class:`ParameterError` naming the parameter if it is
        not allowed."""
        if value is None and self.optional:
            return None
        if self.kind is bool:
            if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
                return bool(value)
            raise ParameterError(f"{self.name} must be True or False, got {value!r}")
        if self.kind is str:
            if self.choices is not None and value not in self.choices:
                raise ParameterError(f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}")
            if not isinstance(value, str):
                raise ParameterError(f"{self.name} must be a string, got {value!r}")
            return value
        return check_number(
            value, self.name, self.minimum, self.maximum, low_open=self.strict, integer=self.kind is int
        )


def common_params(init: str = DEFAULT_INIT) -> Tuple[Param, ...]:
    """The parameters every method has (paper Section 5.1.4, Table 3: the -TR/-TL/-RR/-RL strategies)."""
    return (
        Param(
            "init",
            str,
            init,
            choices=INIT_STRATEGIES,
            cli="--init",
            help="T: random training example, R: uniform random point",
        ),
        Param(
            "label",
            str,
            DEFAULT_LABEL,
            choices=LABEL_STRATEGIES,
            cli="--label",
            help="R: random target label, L: least-likely label",
        ),
        Param("seed", int, 0, minimum=0, cli="--seed", help="seed of every random draw"),
        Param(
            "batch_size",
            int,
            None,
            minimum=1,
            optional=True,
            cli="--batch-size",
            help="points optimised together",
            shown="all n at once",
        ),
    )


@dataclass(frozen=True)
class MethodSpec:
    """Everything known about one fingerprinting method (see the module docstring).

    Args:
        name: CLI name and fingerprint-file ``method`` (``ipguard``).
        display: how tables and figures name it (``IPGuard``).
        impl: ``"module:Class"`` of its :class:`~ipguard_tf.methods.base.FingerprintMethod` subclass.
        params: every hyperparameter, the common ones (:func:`common_params`) included.
        setting: the hyperparameter the paper sweeps (``None``: nothing swept, e.g. Random).
        statistic: what verification computes.
        needs_logits: the method differentiates the target's logits (Random only needs labels).
        figure: the paper's figure of ARUC against the setting (Figures 3-6), if any.
        log_setting: that figure's setting axis is logarithmic.
        summary: one line for ``--help``.
        sweep_strategies: the strategies a sweep runs for the method (``None``: the configured ones; Random's
            label strategy is moot, so RR and TR; ``-`` for a method without the -TR/-TL/-RR/-RL strategies).
        task_agnostic: the method reads the model's raw outputs (any task) and needs no training data (TAFA).
    """

    name: str
    display: str
    impl: str
    params: Tuple[Param, ...]
    setting: Optional[str] = None
    statistic: Statistic = MATCHING_RATE
    needs_logits: bool = True
    figure: Optional[int] = None
    log_setting: bool = False
    summary: str = ""
    sweep_strategies: Optional[Tuple[str, ...]] = None
    #: the method fingerprints any model (classifier, regressor, generator) from its raw outputs, without data
    task_agnostic: bool = False
    #: the parameter naming a zoo whose surrogate and reference members are the method's ensemble (CAE's ``zoo``):
    #: the zoo layer loads them for it (:func:`ipguard_tf.zoo.members.method_inputs`)
    ensemble_param: Optional[str] = None
    _by_name: Dict[str, Param] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by = {p.name: p for p in self.params}
        if len(by) != len(self.params):
            raise ValueError(f"method {self.name}: duplicate parameter names")
        if self.ensemble_param is not None and self.ensemble_param not in by:
            raise ValueError(f"method {self.name}: ensemble_param {self.ensemble_param!r} is not one of its parameters")
        if self.setting is not None and self.setting not in by:
            raise ValueError(f"method {self.name}: setting {self.setting!r} is not one of its parameters")
        object.__setattr__(self, "_by_name", by)

    @property
    def setting_label(self) -> str:
        """The swept parameter's name for tables and axes (``-`` when nothing is swept)."""
        return self.setting or "-"

    def param(self, name: str) -> Param:
        return self._by_name[name]

    def defaults(self) -> Dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def check(self, values: Dict[str, Any]) -> Dict[str, Any]:
        """Every parameter's value (defaults filled in), checked; :class:`ParameterError` on an unknown name or a
        value out of range."""
        unknown = sorted(set(values) - set(self._by_name))
        if unknown:
            raise ParameterError(
                f"{self.name} has no parameter {unknown[0]!r} (its parameters: {', '.join(self._by_name)})"
            )
        return {p.name: p.check(values.get(p.name, p.default)) for p in self.params}

    def load(self) -> type:
        """The implementing class (imports it, and with it TensorFlow)."""
        module, attr = self.impl.split(":")
        return getattr(import_module(module), attr)


_REGISTRY: Dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add a method (or replace one of the same name); returns the spec."""
    _REGISTRY[spec.name] = spec
    return spec


def get(name: str) -> MethodSpec:
    """The spec of method ``name``; :class:`ParameterError` listing the methods if there is none."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ParameterError(f"method must be one of {', '.join(names())}, got {name!r}") from None


def names() -> List[str]:
    """Registered method names, in registration order (the order of tables and figures)."""
    return list(_REGISTRY)


def specs() -> List[MethodSpec]:
    return list(_REGISTRY.values())


def build(name: str, **params: Any):
    """An instance of method ``name`` with the given hyperparameters (and runtime options such as
    ``progress``); :class:`ParameterError` on an unknown method or a bad parameter."""
    return get(name).load()(**params)


def cli_flags(method_specs: Optional[Sequence[MethodSpec]] = None) -> Dict[str, List[Tuple[MethodSpec, Param]]]:
    """Command-line flag -> the (method, parameter) pairs it sets, in registration order."""
    out: Dict[str, List[Tuple[MethodSpec, Param]]] = {}
    for spec in method_specs if method_specs is not None else specs():
        for p in spec.params:
            if p.cli:
                out.setdefault(p.cli, []).append((spec, p))
    return out


# ------------------------------------------------------------------------------------------------------------------
# The registered methods (paper Section 2.2 and 5.1.3 for the baselines, Section 4.2 for IPGuard)
_LR = Param(
    "learning_rate",
    float,
    None,
    minimum=0.0,
    strict=True,
    optional=True,
    cli="--lr",
    help="Adam learning rate",
    shown="0.001 for 28x28/32x32 inputs, 0.1 for ImageNet size",
)


_SEGMENT = Param(
    "segment",
    int,
    10,
    minimum=1,
    cli="--segment",
    help="iterations per graph call between dropping finished points (speed only)",
)


_JIT = Param("jit_compile", bool, False, cli="--jit-compile", help="XLA-compile the search loop")


register(
    MethodSpec(
        "random",
        "Random",
        "ipguard_tf.methods.baselines:RandomPoints",
        common_params(init="R"),
        needs_logits=False,
        summary="the initial points themselves (default uniform random points)",
        sweep_strategies=("RR", "TR"),
    )
)


register(
    MethodSpec(
        "fgsm",
        "FGSM",
        "ipguard_tf.methods.baselines:FGSM",
        common_params()
        + (
            Param("epsilon", float, DEFAULT_EPSILON, minimum=0.0, maximum=1.0, cli="--epsilon", help="L-infinity step"),
        ),
        setting="epsilon",
        figure=3,
        summary="one targeted signed-gradient step (Goodfellow et al. 2015)",
    )
)


register(
    MethodSpec(
        "igsm",
        "IGSM",
        "ipguard_tf.methods.baselines:IGSM",
        common_params()
        + (
            Param(
                "epsilon", float, DEFAULT_EPSILON, minimum=0.0, maximum=1.0, cli="--epsilon", help="L-infinity bound"
            ),
            Param(
                "alpha",
                float,
                IGSM_ALPHA,
                minimum=0.0,
                strict=True,
                maximum=1.0,
                cli="--alpha",
                help="step size",
                shown="1/255",
            ),
            Param("max_iter", int, MAX_ITERATIONS, minimum=0, cli="--max-iter", help="iteration cap"),
        ),
        setting="epsilon",
        figure=4,
        summary="iterated FGSM steps in an epsilon ball (Kurakin et al. 2017)",
    )
)


register(
    MethodSpec(
        "cw",
        "CW-L2",
        "ipguard_tf.methods.baselines:CWL2",
        common_params()
        + (
            Param("kappa", float, 0.0, minimum=0.0, cli="--k", help="confidence margin kappa"),
            _LR,
            Param(
                "max_iter",
                int,
                MAX_ITERATIONS,
                minimum=1,
                cli="--max-iter",
                help="iteration cap per binary-search step",
            ),
            Param(
                "binary_search_steps",
                int,
                CW_BINARY_SEARCH_STEPS,
                minimum=1,
                cli="--cw-steps",
                help="binary-search steps over the constant c",
            ),
            Param(
                "initial_const",
                float,
                CW_INITIAL_CONST,
                minimum=0.0,
                strict=True,
                cli="--cw-initial-const",
                help="first constant c",
            ),
            Param("abort_early", bool, True, cli="--cw-abort-early", help="stop a point whose loss stalls"),
            _SEGMENT,
            _JIT,
        ),
        setting="kappa",
        figure=5,
        log_setting=True,
        summary="targeted Carlini & Wagner L2 attack (2017)",
    )
)


register(
    MethodSpec(
        "ipguard",
        "IPGuard",
        "ipguard_tf.methods.ipguard:IPGuard",
        common_params()
        + (
            Param("k", float, DEFAULT_K, minimum=0.0, cli="--k", help="logit margin k of Eq. 5"),
            _LR,
            Param("max_iter", int, MAX_ITERATIONS, minimum=0, cli="--max-iter", help="iteration cap"),
            _SEGMENT,
            _JIT,
        ),
        setting="k",
        figure=6,
        log_setting=True,
        summary="points near the classification boundary (Eq. 5)",
    )
)


_SAC_COMMON = (
    Param("seed", int, 0, minimum=0, cli="--seed", help="seed of every random draw"),
    Param(
        "batch_size",
        int,
        None,
        minimum=1,
        optional=True,
        cli="--batch-size",
        help="samples labelled together",
        shown="all n at once",
    ),
)


register(
    MethodSpec(
        "cae",
        "CAE",
        "ipguard_tf.methods.cae:CAE",
        _SAC_COMMON[:1]
        + (
            Param(
                "batch_size",
                int,
                None,
                minimum=1,
                optional=True,
                cli="--batch-size",
                help="candidate examples searched together (one round)",
                shown="n",
            ),
            Param(
                "zoo",
                str,
                None,
                optional=True,
                cli="--cae-zoo",
                help="zoo holding the CAE surrogate and reference models of the target (ipguard zoo build --kind sac)",
                shown="none: give surrogates= and references= in Python",
            ),
            Param(
                "epsilon",
                float,
                CAE_EPSILON,
                minimum=0.0,
                strict=True,
                maximum=1.0,
                cli="--epsilon",
                help="L-infinity bound of the perturbation",
            ),
            Param("alpha", float, CAE_ALPHA, minimum=0.0, cli="--cae-alpha", help="weight of the conferrability term"),
            Param("beta", float, CAE_BETA, minimum=0.0, cli="--cae-beta", help="weight of the source-misleading term"),
            Param(
                "gamma", float, CAE_GAMMA, minimum=0.0, cli="--cae-gamma", help="weight of the surrogate-agreement term"
            ),
            Param(
                "dropout",
                float,
                CAE_DROPOUT,
                minimum=0.0,
                maximum=1.0,
                strict=False,
                cli="--cae-dropout",
                help="probability of leaving an ensemble member out of a step",
            ),
            Param(
                "tau",
                float,
                CAE_TAU,
                minimum=0.0,
                maximum=1.0,
                cli="--cae-tau",
                help="conferrability threshold of the filter",
            ),
            Param(
                "learning_rate",
                float,
                CAE_LEARNING_RATE,
                minimum=0.0,
                strict=True,
                cli="--lr",
                help="Adam learning rate",
            ),
            Param("max_iter", int, CAE_MAX_ITER, minimum=1, cli="--max-iter", help="Adam steps per example"),
            Param(
                "max_candidates_per_point",
                int,
                CAE_MAX_CANDIDATES_PER_POINT,
                minimum=1,
                cli="--cae-candidates",
                help="owner examples searched per fingerprint point at most",
            ),
            _SEGMENT,
        ),
        summary="conferrable adversarial examples of an ensemble of surrogates and references (Lukas et al. 2021)",
        sweep_strategies=("-",),
        ensemble_param="zoo",
    )
)


register(
    MethodSpec(
        "sac-m",
        "SAC-m",
        "ipguard_tf.methods.sac:SACm",
        _SAC_COMMON
        + (
            Param(
                "patch",
                float,
                SAC_PATCH,
                minimum=0.0,
                maximum=1.0,
                strict=True,
                cli="--sac-patch",
                help="CutMix patch side as a fraction of the image side",
            ),
            Param(
                "transpose",
                bool,
                False,
                cli="--sac-transpose",
                help="swap H and W of the samples, as the official SAC files do",
            ),
        ),
        statistic=SAC_DISTANCE,
        summary="output correlation on CutMix samples (Guan et al. 2022)",
        sweep_strategies=("-",),
    )
)


register(
    MethodSpec(
        "sac-w",
        "SAC-w",
        "ipguard_tf.methods.sac:SACw",
        _SAC_COMMON,
        statistic=SAC_DISTANCE,
        summary="output correlation on samples the model misclassifies (Guan et al. 2022)",
        sweep_strategies=("-",),
    )
)


register(
    MethodSpec(
        "tafa",
        "TAFA",
        "ipguard_tf.methods.tafa:TAFA",
        (
            Param("seed", int, 0, minimum=0, cli="--seed", help="seed of every random draw"),
            Param(
                "task",
                str,
                "classifier",
                choices=TAFA_TASKS,
                cli="--task",
                help="the target's task: classifier/regressor start from uniform [0, 1] inputs, generator from "
                "N(0, 1) latents",
            ),
            Param(
                "reach",
                float,
                TAFA_REACH,
                minimum=0.0,
                strict=True,
                cli="--tafa-reach",
                help="longest walk from a start to a region boundary (input units)",
            ),
            Param(
                "epsilon",
                float,
                TAFA_EPSILON,
                minimum=0.0,
                strict=True,
                cli="--tafa-epsilon",
                help="half-width of the segment the output's bend is measured on",
            ),
            Param(
                "statistic",
                str,
                TAFA_STATISTICS[0],
                choices=TAFA_STATISTICS,
                cli="--tafa-statistic",
                help="the statistic the fingerprint is verified by (recorded in the file)",
            ),
            Param(
                "batch_size",
                int,
                None,
                minimum=1,
                optional=True,
                cli="--batch-size",
                help="starts searched together",
                shown="128",
            ),
        ),
        statistic=OUTPUT_CORRELATION,
        needs_logits=False,
        sweep_strategies=("-",),
        task_agnostic=True,
        summary="reconstruction of TAFA (Pan et al. 2021): points on the target's linear-region boundaries, any "
        "ReLU network and task",
    )
)


register(
    MethodSpec(
        "akh",
        "AKH",
        "ipguard_tf.methods.akh:AKH",
        _SAC_COMMON
        + (
            Param(
                "augment",
                bool,
                AKH_AUGMENT,
                cli="--akh-augment",
                help="when the model misclassifies fewer than n of the examples, fill up with CutMix and flipped "
                "copies of them, as QuRD does (else an error)",
            ),
        ),
        needs_logits=False,
        summary="label agreement on examples the model misclassifies (AKH, Godinot et al. 2025, QuRD)",
        sweep_strategies=("-",),
    )
)
