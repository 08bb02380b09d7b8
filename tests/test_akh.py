"""AKH (QuRD, Godinot et al. AAAI 2025; issue 31): inputs the target misclassifies, labelled by the target, verified
by label agreement; seeded, refused when the model gets too few wrong, QuRD's CutMix fill-up on request; in the
registry, the CLI, a sweep and an audit like the other methods. Tiny fixed models, seconds."""

import numpy as np
import pytest
from conftest import SHAPE, make_tiny_keras3

from ipguard_tf.core import registry
from ipguard_tf.core.errors import DataError, ModelError, ParameterError
from ipguard_tf.methods.akh import AKH, cutmix_roll
from ipguard_tf.verification.suspects import verify

N_DATA, N_WRONG = 300, 25


@pytest.fixture(scope="module")
def target():
    return make_tiny_keras3(0)


@pytest.fixture(scope="module")
def owner(target):
    """The owner's examples and labels: the target gets exactly the first N_WRONG wrong."""
    x = np.random.default_rng(21).random((N_DATA,) + SHAPE, dtype=np.float32)
    y = np.argmax(target.predict(x, verbose=0), axis=1)
    y[:N_WRONG] = (y[:N_WRONG] + 1) % 4
    return x, y


def _rows(data, points):
    """The index in ``data`` of each point (-1 where the point is none of its rows)."""
    flat = data.reshape(len(data), -1)
    out = []
    for p in points.reshape(len(points), -1):
        hit = np.flatnonzero(np.all(flat == p, axis=1))
        out.append(int(hit[0]) if len(hit) else -1)
    return np.array(out)


def test_points_are_misclassified_inputs_labelled_by_the_model(target, owner):
    x, y = owner
    fp = AKH(seed=2).generate(target, 20, x, train_y=y)
    idx = _rows(x, fp.x)
    assert np.all((0 <= idx) & (idx < N_WRONG)) and len(set(idx)) == 20  # distinct examples the model gets wrong
    model_labels = np.argmax(target.predict(fp.x, verbose=0), axis=1)
    assert np.array_equal(fp.y, model_labels) and np.all(fp.y != y[idx])  # the model's labels, not the true ones
    assert np.array_equal(fp.source, fp.y) and np.array_equal(fp.target, fp.y) and fp.converged.all()
    meta = fp.metadata
    assert meta["method"] == "akh" and meta["statistic"] == "matching_rate" and fp.outputs is None
    assert meta["strategy"] == "wrong" and meta["params"] == {"seed": 2, "batch_size": None, "augment": False}
    assert meta["starts"]["kind"] == "data" and "labels_sha256" in meta["starts"]


def test_the_samples_are_sac_w_s_for_the_same_seed(target, owner):
    """As in QuRD, where AKH and SAC share their sampler: the two differ only in what is compared."""
    from ipguard_tf.methods.sac import SACw

    x, y = owner
    akh, sac = AKH(seed=7).generate(target, 12, x, train_y=y), SACw(seed=7).generate(target, 12, x, train_y=y)
    assert np.array_equal(akh.x, sac.x) and np.array_equal(akh.y, sac.y)


def test_the_model_matches_itself_and_another_model_less(target, owner):
    x, y = owner
    fp = AKH(seed=0).generate(target, 20, x, train_y=y)
    me = verify(fp, target)
    assert me.statistic == "matching_rate" and me.value == 1.0 and me.verdict == 1
    assert verify(fp, make_tiny_keras3(1)).value < 1.0


def test_deterministic_with_the_seed(target, owner):
    x, y = owner
    a = AKH(seed=5).generate(target, 15, x, train_y=y)
    b = AKH(seed=5).generate(target, 15, x, train_y=y)
    c = AKH(seed=6).generate(target, 15, x, train_y=y)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x)


def test_bad_parameters_raise():
    with pytest.raises(ParameterError, match="augment must be True or False"):
        AKH(augment="yes")
    with pytest.raises(ParameterError, match="seed"):
        AKH(seed=-1)
    with pytest.raises(ParameterError, match="batch_size"):
        AKH(batch_size=0)
    with pytest.raises(ParameterError, match="akh has no parameter 'k'"):
        registry.build("akh", k=1.0)


def test_too_few_misclassified_inputs_or_no_labels_is_a_one_line_error(target, owner):
    x, y = owner
    with pytest.raises(
        ModelError, match=f"misclassifies {N_WRONG} of the {N_DATA} examples given; AKH needs n = 30"
    ) as e:
        AKH().generate(target, 30, x, train_y=y)
    assert "\n" not in str(e.value) and "--akh-augment" in str(e.value)
    with pytest.raises(DataError, match="labels"):
        AKH().generate(target, 5, x)
    with pytest.raises(DataError, match="owner's data"):
        AKH().generate(target, 5, None)
    with pytest.raises(ParameterError):
        AKH().generate(target, 0, x, train_y=y)
    right = np.argmax(target.predict(x, verbose=0), axis=1)  # nothing misclassified: not even CutMix can fill up
    with pytest.raises(ModelError, match=r"misclassifies 0 of .*\(give more data\)"):
        AKH(augment=True).generate(target, 5, x, train_y=right)


def test_augment_fills_up_with_cutmix_and_flips_as_qurd(target, owner):
    x, y = owner
    assert np.array_equal(
        AKH(seed=1, augment=True).generate(target, 20, x, train_y=y).x,
        AKH(seed=1).generate(target, 20, x, train_y=y).x,
    )  # enough misclassified inputs: augment changes nothing
    n = N_WRONG + 3 * N_WRONG + 10  # the misclassified, one full round of three copies, part of a second
    fp = AKH(seed=1, augment=True).generate(target, n, x, train_y=y)
    assert len(fp) == n and fp.metadata["strategy"] == "wrong+cutmix"
    idx = _rows(x, fp.x[:N_WRONG])
    assert sorted(idx) == list(range(N_WRONG))  # first the misclassified inputs themselves, in a random order
    mixed = fp.x[N_WRONG : 2 * N_WRONG]
    assert np.array_equal(fp.x[2 * N_WRONG : 3 * N_WRONG], mixed[:, :, ::-1])  # left-right flip
    assert np.array_equal(fp.x[3 * N_WRONG : 4 * N_WRONG], mixed[:, ::-1])  # upside-down flip
    assert np.array_equal(fp.y, np.argmax(target.predict(fp.x, verbose=0), axis=1))
    assert np.array_equal(AKH(seed=1, augment=True).generate(target, n, x, train_y=y).x, fp.x)


def test_cutmix_pastes_one_box_from_the_previous_image():
    imgs = np.random.default_rng(0).random((6, 8, 8, 1), dtype=np.float32)
    for seed in range(10):
        out = cutmix_roll(imgs, 1.0, np.random.default_rng(seed))
        changed = out != imgs
        box = changed.any(axis=(0, 3))
        rows, cols = np.flatnonzero(box.any(axis=1)), np.flatnonzero(box.any(axis=0))
        if len(rows):  # one rectangle, the same for every image, filled from the image before it
            assert np.all(box[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
            sl = (slice(None), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
            assert np.array_equal(out[sl], np.roll(imgs, 1, axis=0)[sl])
        assert np.array_equal(out[~changed], imgs[~changed])


def test_registry_cli_sweep_and_audit(target, owner, tmp_path):
    from ipguard_tf.cli import build_parser
    from ipguard_tf.cli.extract import method_params
    from ipguard_tf.evaluation.sweep import Suspect, Sweep, strategies_for
    from ipguard_tf.models.classifier import as_classifier
    from ipguard_tf.verification.audit import audit

    spec = registry.get("akh")
    assert spec.statistic is registry.MATCHING_RATE and spec.setting is None and strategies_for("akh", ["TL"]) == ["-"]
    assert registry.build("akh").params() == spec.defaults()
    parse = build_parser().parse_args
    assert method_params(parse(["extract", "--model", "m", "--out", "o", "--method", "akh", "--akh-augment"])) == {
        "augment": True
    }
    with pytest.raises(ParameterError, match="--k does not apply to --method akh"):
        method_params(parse(["extract", "--model", "m", "--out", "o", "--method", "akh", "--k", "1"]))
    x, y = owner
    sus = [
        Suspect("self", "positive", "same", "same", as_classifier(target)),
        Suspect("other", "negative", "other", "other", as_classifier(make_tiny_keras3(1))),
    ]
    r = Sweep(tmp_path, target, x, sus, n=10, progress=False, train_y=y).run("akh", "-", None)
    assert r["key"] == "akh_-_none_seed0" and r["statistic"] == "matching_rate" and r["rates"]["self"] == 1.0
    fp = AKH(seed=3).generate(target, 8, x, train_y=y)
    rep = audit(fp, target, train_x=x, train_y=y)
    assert rep.verdict == "pass" and rep.exit_code == 0, rep.lines()


def test_cli_extract(target, owner, tmp_path, capsys):
    from ipguard_tf.cli import main
    from ipguard_tf.io.fingerprint_file import load_fingerprint

    x, y = owner
    target.save(tmp_path / "target.keras")
    np.savez(tmp_path / "owner.npz", x=x, y=y)
    out = tmp_path / "fp.npz"
    args = ["-q", "extract", "--model", str(tmp_path / "target.keras"), "--method", "akh", "--data"]
    assert main(args + [str(tmp_path / "owner.npz"), "--n", "10", "--seed", "4", "--out", str(out)]) == 0
    fp = load_fingerprint(out)
    rows = _rows(x, fp.x)
    assert fp.metadata["method"] == "akh" and len(fp) == 10 and np.all((0 <= rows) & (rows < N_WRONG))
    assert verify(fp, target).value == 1.0
    capsys.readouterr()
    assert main(args + [str(tmp_path / "owner.npz"), "--n", "200", "--out", str(tmp_path / "fp2.npz")]) == 2
    assert "AKH needs n = 200" in capsys.readouterr().err


def test_reproduce_runs_a_config_with_akh(target, owner, tmp_path, monkeypatch):
    """experiments/reproduce.py with ``"grids": {"akh": [null]}``: one run, the training labels handed to AKH."""
    import json

    from experiments import reproduce
    from ipguard_tf.evaluation.sweep import Suspect
    from ipguard_tf.io.data import Dataset
    from ipguard_tf.models.classifier import as_classifier

    x, y = owner
    sus = [
        Suspect("self", "positive", "same", "same", as_classifier(target)),
        Suspect("other", "negative", "other", "other", as_classifier(make_tiny_keras3(1))),
    ]
    monkeypatch.setattr(reproduce, "load_dataset", lambda name, data_dir=None: Dataset(name, x, y, x[:10], y[:10], 4))
    monkeypatch.setattr(reproduce, "load_zoo_suspects", lambda *a, **k: sus)
    monkeypatch.setattr(reproduce, "load_member", lambda zoo, name: target)
    cfg = {
        "dataset": "toy",
        "zoo": str(tmp_path / "zoo"),
        "n": 10,
        "seed": 0,
        "strategies": ["TL"],
        "grids": {"akh": [None]},
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    assert reproduce.main(["--config", str(tmp_path / "cfg.json"), "--out", str(tmp_path / "out"), "--no-timing"]) == 0
    rows = (tmp_path / "out" / "sweep.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("akh,-,")
    assert (tmp_path / "out" / "cache" / "fp" / "akh_-_none_seed0.npz").exists()
