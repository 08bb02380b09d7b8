"""The method registry: one declaration per method, from which params(), the CLI, the sweep and the report
derive; adding a method is one module and one registration; the name part does not import TensorFlow."""

import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import run_python_script

from ipguard_tf.core import registry
from ipguard_tf.core.errors import IPGuardError, ParameterError

PACKAGE = Path(__file__).resolve().parents[1] / "ipguard_tf"


def test_the_methods_are_registered_in_report_order():
    assert registry.names() == ["random", "fgsm", "igsm", "cw", "ipguard", "cae", "sac-m", "sac-w", "tafa", "akh"]
    assert [s.display for s in registry.specs()] == [
        "Random",
        "FGSM",
        "IGSM",
        "CW-L2",
        "IPGuard",
        "CAE",
        "SAC-m",
        "SAC-w",
        "TAFA",
        "AKH",
    ]
    assert {s.name: s.setting for s in registry.specs()} == {
        "random": None,
        "fgsm": "epsilon",
        "igsm": "epsilon",
        "cw": "kappa",
        "ipguard": "k",
        "cae": None,
        "sac-m": None,
        "sac-w": None,
        "tafa": None,
        "akh": None,
    }
    assert {s.name: s.statistic for s in registry.specs()} == {
        **{n: registry.MATCHING_RATE for n in ("random", "fgsm", "igsm", "cw", "ipguard", "cae")},
        "sac-m": registry.SAC_DISTANCE,
        "sac-w": registry.SAC_DISTANCE,
        "tafa": registry.OUTPUT_CORRELATION,
        "akh": registry.MATCHING_RATE,
    }
    assert [s.name for s in registry.specs() if s.task_agnostic] == ["tafa"]
    assert registry.SAC_DISTANCE.higher_is_copy is False and registry.MATCHING_RATE.higher_is_copy is True


@pytest.mark.parametrize("name", ["random", "fgsm", "igsm", "cw", "ipguard", "sac-m", "sac-w", "akh"])
def test_params_derive_from_the_declaration(name):
    spec = registry.get(name)
    method = registry.build(name)
    assert type(method) is spec.load() and method.name == name
    assert method.params() == spec.defaults()  # every declared parameter, CW-L2's segment and jit_compile too
    assert list(method.params()) == [p.name for p in spec.params]


def test_parameter_error_is_both_user_error_and_value_error():
    with pytest.raises(ParameterError) as ei:
        registry.build("ipguard", k=-1)
    assert isinstance(ei.value, IPGuardError) and isinstance(ei.value, ValueError)
    with pytest.raises(
        ParameterError, match="method must be one of random, fgsm, igsm, cw, ipguard, cae, sac-m, sac-w"
    ):
        registry.get("nope")
    with pytest.raises(ParameterError, match="has no parameter 'epsilon'"):
        registry.build("ipguard", epsilon=0.1)
    with pytest.raises(ParameterError, match="jit_compile must be True or False"):
        registry.build("cw", jit_compile="yes")


def test_cli_options_come_from_the_registry():
    from ipguard_tf.cli import build_parser

    parser = build_parser()
    extract = parser._subparsers._group_actions[0].choices["extract"]
    options = {o for a in extract._actions for o in a.option_strings}
    method = next(a for a in extract._actions if "--method" in a.option_strings)
    assert list(method.choices) == registry.names()
    for flag in registry.cli_flags():
        assert flag in options, flag
    args = parser.parse_args(["extract", "--model", "m", "--out", "o", "--method", "cw", "--k", "2", "--cw-steps", "3"])
    from ipguard_tf.cli.extract import method_params

    assert method_params(args) == {"kappa": 2.0, "binary_search_steps": 3}
    args = parser.parse_args(["extract", "--model", "m", "--out", "o", "--epsilon", "0.1"])
    with pytest.raises(ParameterError, match="--epsilon does not apply to --method ipguard"):
        method_params(args)


def test_names_and_cli_do_not_import_tensorflow():
    r = run_python_script(
        textwrap.dedent("""
        import sys
        from ipguard_tf.core import registry
        from ipguard_tf.cli import build_parser
        build_parser().format_help()
        assert registry.names() and registry.get("ipguard").setting == "k"
        heavy = sorted(m for m in ("tensorflow", "keras", "tf_keras") if m in sys.modules)
        print("HEAVY", heavy)
    """)
    )
    assert r.returncode == 0 and "HEAVY []" in r.stdout, r.stdout + r.stderr[-2000:]


def test_no_per_method_dispatch_outside_the_registry():
    hits = []
    for path in PACKAGE.rglob("*.py"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\b(el)?if\s+(args\.)?method\s*(==|in)\b", line) or re.search(r"\bmethod\s*==\s*[\"']", line):
                hits.append(f"{path.relative_to(PACKAGE)}:{i}: {line.strip()}")
    assert not hits, hits


# -- adding a method: one module (here, this test module) + one registration --------------------------------------
def _midpoint_class():
    """The method's module, in effect (built here so that TensorFlow is imported only when the test runs)."""
    from ipguard_tf.methods.base import FingerprintMethod, SearchOutput

    class Midpoints(FingerprintMethod):
        """A toy method: each point moved a fraction ``t`` of the way to the middle of the data range."""

        name = "midpoints"

        def _search(self, clf, plan, x0, src, tgt, *, checkpoint=None):
            n = len(x0)
            x = x0 + self.t * (0.5 - x0)
            return SearchOutput(
                x=x,
                iterations=np.ones(n, np.int64),
                objective=np.full(n, np.nan, np.float32),
                converged=np.ones(n, bool),
                stats={"points": float(n)},
            )

    return Midpoints


def test_every_statistic_explains_itself():
    """The ownership report opens with the fingerprint's statistic's own explanation: each registered statistic
    has one, and none borrows another's (a missing one once made SAC and TAFA reports describe IPGuard)."""
    texts = [s.explanation for s in registry.STATISTICS.values()]
    assert all(texts) and len(set(texts)) == len(texts)


def test_adding_a_method_is_one_registration(monkeypatch, tiny_model, tiny_data, tmp_path):
    import sys

    from ipguard_tf.evaluation.sweep import Suspect, Sweep
    from ipguard_tf.models.classifier import as_classifier

    module = type(sys)("toy_midpoints")
    module.Midpoints = _midpoint_class()
    monkeypatch.setitem(sys.modules, "toy_midpoints", module)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register(
        registry.MethodSpec(
            "midpoints",
            "Midpoints",
            "toy_midpoints:Midpoints",
            registry.common_params(init="R")
            + (
                registry.Param("t", float, 0.5, minimum=0.0, maximum=1.0, cli="--t", help="fraction of the way to 0.5"),
            ),
            setting="t",
            needs_logits=False,
            summary="toy",
        )
    )

    from ipguard_tf.cli import build_parser
    from ipguard_tf.cli.extract import method_params

    args = build_parser().parse_args(["extract", "--model", "m", "--out", "o", "--method", "midpoints", "--t", "0.25"])
    assert method_params(args) == {"t": 0.25}
    fp = registry.build("midpoints", t=0.25, batch_size=3, seed=1).generate(tiny_model, 7, tiny_data)
    assert fp.metadata["method"] == "midpoints" and fp.metadata["params"]["t"] == 0.25
    assert fp.metadata["stats"] == {"points": 7.0}  # summed over the three batches by the base
    with pytest.raises(ParameterError, match="t must be a finite number"):
        registry.build("midpoints", t=2)
    sus = [
        Suspect("self", "positive", "same", "same", as_classifier(tiny_model)),
        Suspect("other", "negative", "other", "other", as_classifier(make_other())),
    ]
    r = Sweep(tmp_path, tiny_model, tiny_data, sus, n=6, progress=False).run("midpoints", "RR", 0.5)
    assert r["rates"]["self"] == 1.0 and r["key"] == "midpoints_RR_0.5_seed0"


def make_other():
    from conftest import make_tiny_keras3

    return make_tiny_keras3(9)
