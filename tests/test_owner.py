"""The owner's path (issue 30): ``ipguard fingerprint`` on a model of another shape than Fashion-MNIST with only
--model and --out, on labelled owner data with trained negatives, the tuning rules, the cheap copies, the owner's
data forms, and one-line errors."""

import json

import numpy as np
import pytest
from conftest import SHAPE, make_tiny_keras3, make_tiny_tf_keras

from ipguard_tf.cli import main
from ipguard_tf.core.calibration import smallest_supported_fpr
from ipguard_tf.core.errors import DataError, ParameterError
from ipguard_tf.io.fingerprint_file import load_fingerprint
from ipguard_tf.io.owner_data import load_owner_data
from ipguard_tf.owner import tune as T
from ipguard_tf.zoo.copies import magnitude_pruned, noisy
from ipguard_tf.zoo.negatives import fresh_clone

CIFAR = (32, 32, 3)


# -- the tuning rules (pure) ------------------------------------------------------------------------------------
class _FP:
    n_converged = 10
    metadata = {"seconds": 1.0}


def _trial(k, copies, negatives=(), random=()):
    return T.Trial(
        T.Setting(k, "R", "L"),
        _FP(),
        {f"c{i}": r for i, r in enumerate(copies)},
        {f"n{i}": r for i, r in enumerate(negatives)},
        {f"r{i}": r for i, r in enumerate(random)},
    )


def test_choose_with_negatives_takes_the_largest_margin_and_ties_to_the_smaller_k():
    trials = [_trial(1, [0.5, 0.9], [0.1]), _trial(3, [0.95, 1.0], [0.2]), _trial(10, [1.0], [0.25], [0.1])]
    i, rule = T.choose(trials)
    assert i == 1 and "largest margin" in rule  # margins 0.4, 0.75, 0.75: the tie goes to k = 3
    assert trials[1].margin == pytest.approx(0.75)


def test_choose_without_negatives_takes_the_smallest_k_near_the_best_margin():
    trials = [_trial(1, [0.5], random=[0.1]), _trial(3, [0.86], random=[0.1]), _trial(10, [0.9], random=[0.1])]
    i, rule = T.choose(trials)
    assert i == 1 and "no negatives" in rule  # 0.76 is within 0.05 of the best 0.80
    tuning = T.Tuning(trials, i, rule)
    assert not tuning.uniqueness_measured
    assert "was not measured" in tuning.summary()
    assert tuning.record()["chosen"] == "k=3 -RL"


def test_candidates_follow_the_logit_scale():
    grid = T.candidates("T", 2.0)
    assert [s.k for s in grid] == [0.2, 0.2, 0.6, 0.6, 2.0, 2.0, 6.0, 6.0]
    assert [s.label for s in grid[:2]] == ["L", "R"]
    assert T.logit_scale(np.array([[0.0, 2.0], [0.0, 4.0], [1.0, 1.0]])) == pytest.approx(1.0)
    with pytest.raises(ParameterError):
        T.candidates("R", 0.0)
    with pytest.raises(ParameterError):
        T.logit_scale(np.array([np.nan, 1.0]))


def test_smallest_supported_fpr_is_about_three_over_n():
    assert smallest_supported_fpr(1) == pytest.approx(0.95)
    assert smallest_supported_fpr(100) == pytest.approx(0.0295, abs=2e-4)
    assert 2.9 / 300 < smallest_supported_fpr(300) < 3.1 / 300
    assert smallest_supported_fpr(0) == 1.0


# -- copies ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("keras2", [False, True])
def test_pruned_copy_zeroes_the_fraction_of_each_kernel_and_leaves_the_model_alone(keras2):
    m = make_tiny_keras3(0, softmax=True)
    if keras2:
        m = make_tiny_tf_keras(m.get_weights())
    before = [np.array(w) for w in m.get_weights()]
    p = magnitude_pruned(m, 0.3)
    kernels = [w for w in p.get_weights() if w.ndim > 1]
    for k in kernels:
        assert np.mean(k == 0) == pytest.approx(0.3, abs=1.0 / k.size + 1e-9)
    assert all(np.array_equal(a, b) for a, b in zip(before, m.get_weights()))
    n = noisy(m, 0.05, seed=1)
    assert not np.array_equal(n.get_weights()[0], before[0])
    assert type(fresh_clone(m, 3)) is type(m)


# -- the owner's data --------------------------------------------------------------------------------------------
def test_owner_data_forms(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.random((20, *SHAPE)) * 255).astype(np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(20) % 4)
    ds = load_owner_data(str(tmp_path / "d.npz"), input_shape=SHAPE)
    assert ds.x_train.dtype == np.float32 and ds.x_train.max() <= 1.0
    assert len(ds.x_train) == 18 and len(ds.x_test) == 2 and ds.num_classes == 4
    np.savez(tmp_path / "nolabels.npz", x=x[..., 0].astype(np.float32) / 255)
    assert load_owner_data(str(tmp_path / "nolabels.npz")).y_train is None
    np.savez(tmp_path / "bad.npz", x=x.astype(np.float32))  # floats in [0, 255]
    with pytest.raises(DataError, match="in \\[0, 1\\]"):
        load_owner_data(str(tmp_path / "bad.npz"))
    with pytest.raises(DataError, match="expects"):
        load_owner_data(str(tmp_path / "d.npz"), input_shape=CIFAR)
    with pytest.raises(DataError, match="no such file"):
        load_owner_data(str(tmp_path / "none.npz"))
    from PIL import Image

    for c in range(2):
        (tmp_path / "imgs" / f"class{c}").mkdir(parents=True)
        for i in range(3):
            Image.fromarray((rng.random((10, 12, 3)) * 255).astype(np.uint8)).save(tmp_path / f"imgs/class{c}/{i}.png")
    ds = load_owner_data(str(tmp_path / "imgs"), input_shape=SHAPE)  # converted to grey and resized to 8x8
    assert ds.x_train.shape[1:] == SHAPE and sorted(np.concatenate([ds.y_train, ds.y_test])) == [0, 0, 0, 1, 1, 1]


# -- the command, end to end -------------------------------------------------------------------------------------
def _small_resnet(seed: int, train: bool):
    """A small CIFAR-shaped ResNet (Keras 2, softmax head; a strided stem keeps the tuning's searches cheap), trained
    for one epoch on 3,000 Fashion-MNIST images padded to 32x32 and repeated over three channels (a few seconds), or
    left with its random weights."""
    import tf_keras as K

    from ipguard_tf.io.data import load_fashion_mnist

    K.utils.set_random_seed(seed)

    def block(x, f, s):
        y = K.layers.Conv2D(f, 3, strides=s, padding="same")(x)
        y = K.layers.ReLU()(K.layers.BatchNormalization()(y))
        y = K.layers.BatchNormalization()(K.layers.Conv2D(f, 3, padding="same")(y))
        if s != 1 or x.shape[-1] != f:
            x = K.layers.Conv2D(f, 1, strides=s)(x)
        return K.layers.ReLU()(K.layers.Add()([x, y]))

    inp = K.Input(CIFAR)
    h = block(block(K.layers.Conv2D(8, 3, strides=2, padding="same")(inp), 8, 1), 16, 2)  # a strided stem: cheap
    out = K.layers.Dense(10, activation="softmax")(K.layers.GlobalAveragePooling2D()(h))
    m = K.Model(inp, out)
    if train:
        ds = load_fashion_mnist()
        x = np.pad(np.repeat(ds.x_train[:3000], 3, axis=-1), ((0, 0), (2, 2), (2, 2), (0, 0)))
        m.compile(K.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
        m.fit(x, ds.y_train[:3000], batch_size=64, epochs=1, verbose=0)
    return m


def _rate(fp, model):
    from ipguard_tf.models.classifier import as_classifier

    return float(np.mean(as_classifier(model).predict_labels(fp.x) == fp.y))


def test_fingerprint_a_cifar_shaped_model_with_only_model_and_out(tmp_path, capsys):
    model = _small_resnet(0, train=True)
    path = tmp_path / "resnet.h5"
    model.save(path)
    out = tmp_path / "fp.npz"
    assert main(["-q", "fingerprint", "--model", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "points start uniform" in printed and "chosen: k=" in printed and "was not measured" in printed
    fp = load_fingerprint(out)
    assert len(fp) == 100 and fp.x.shape[1:] == CIFAR
    tuning = fp.metadata["owner"]["tuning"]
    assert tuning["chosen"] == f"k={fp.metadata['params']['k']:g} -{fp.metadata['strategy']}"
    assert len(tuning["candidates"]) >= 2 and tuning["uniqueness_measured"] is False
    assert fp.metadata["owner"]["logit_scale"] > 0
    assert not (tmp_path / "fp.tuning").exists()
    # the bar, on copies and random-weight models made here (seeds the tuning never saw)
    for p in (0.1, 0.3):
        assert _rate(fp, magnitude_pruned(model, p)) >= 0.9, p
    others = [_rate(fp, fresh_clone(model, s)) for s in range(301, 306)]
    assert max(others) <= 0.2, others
    assert _rate(fp, model) == 1.0


def test_fingerprint_with_owner_data_and_trained_negatives_is_calibrated_with_a_report(tmp_path, capsys):
    from ipguard_tf.io.data import load_fashion_mnist

    ds = load_fashion_mnist()
    x, y = (ds.x_train[:1500, 10:18, 10:18] * 255).astype(np.uint8), ds.y_train[:1500] % 4
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    model = make_tiny_keras3(0, softmax=True)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x / 255.0, y, epochs=3, verbose=0)
    model.save(tmp_path / "mine.keras")
    out = tmp_path / "fp.npz"
    argv = ["-q", "fingerprint", "--model", str(tmp_path / "mine.keras"), "--out", str(out), "--n", "40"]
    argv += ["--data", str(tmp_path / "mine.npz"), "--negatives", "3", "--negative-epochs", "2", "--fpr", "0.05"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    fp = load_fingerprint(out)
    owner = fp.metadata["owner"]
    assert owner["tuning"]["uniqueness_measured"] is True
    assert [n["name"] for n in owner["negatives"]] == [f"negative-{i}.keras" for i in (1, 2, 3)]
    assert {c["name"] for c in owner["copies"]} >= {"pruned-10", "pruned-30", "noise", "finetune-last"}
    assert all(c["accuracy"] is not None for c in owner["copies"])
    assert "calibration" in fp.metadata and fp.metadata["calibration"]["fpr"] == 0.05
    assert "3 negatives support false-positive rates down to about 0.63" in printed  # 1 - 0.05 ** (1 / 3)
    report = (tmp_path / "fp.html").read_text()
    assert "With 3 negatives, the smallest false-positive rate the negatives themselves can support is 0.632" in report
    assert "copy: pruned-10" in report and "negative: negative-1.keras" in report
    assert (tmp_path / "fp.negatives" / "recipe.json").exists()
    # the trained negatives are reused by a re-run (resumable), and the calibration replays with ipguard calibrate
    assert main(["-q", "calibrate", "--fingerprint", str(out), "--negatives", str(tmp_path / "fp.negatives"),
                 "--fpr", "0.05", "--out", str(tmp_path / "again.npz")]) == 0  # fmt: skip
    again = load_fingerprint(tmp_path / "again.npz")
    assert json.dumps(again.metadata["calibration"]["rates"]) == json.dumps(fp.metadata["calibration"]["rates"])
    # a folder of negatives and a fixed k: one candidate, calibrated on the folder's models
    fixed = tmp_path / "fixed.npz"
    argv = ["-q", "fingerprint", "--model", str(tmp_path / "mine.keras"), "--out", str(fixed), "--n", "40", "--k", "2"]
    argv += ["--data", str(tmp_path / "mine.npz"), "--negatives", str(tmp_path / "fp.negatives"), "--fpr", "0.05"]
    assert main(argv) == 0
    fixed_fp = load_fingerprint(fixed)
    assert [c["setting"] for c in fixed_fp.metadata["owner"]["tuning"]["candidates"]] == ["k=2 -TL"]
    assert fixed_fp.metadata["calibration"]["negatives"] == [f"negative-{i}.keras" for i in (1, 2, 3)]


def _one_line(capsys, code, expect):
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and expect in err[0] and "Traceback" not in err[0], err


def test_bad_input_is_one_line(tmp_path, capsys):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"junk")
    out = str(tmp_path / "fp.npz")
    _one_line(capsys, main(["-q", "fingerprint", "--model", str(junk), "--out", out]), "junk.h5")
    model = make_tiny_keras3(0, softmax=True)
    model.save(tmp_path / "m.keras")
    m = str(tmp_path / "m.keras")
    _one_line(capsys, main(["-q", "fingerprint", "--model", m, "--out", out, "--data", "nope.npz"]), "no such file")
    _one_line(capsys, main(["-q", "fingerprint", "--model", m, "--out", out, "--negatives", "3"]), "labelled data")
    _one_line(capsys, main(["-q", "fingerprint", "--model", m, "--out", out, "--ray"]), "give --negatives N")
    _one_line(capsys, main(["-q", "fingerprint", "--model", m, "--out", out, "--ray-cpus", "2"]), "needs --ray")
    with pytest.raises(SystemExit) as exc:  # argparse's own check
        main(["-q", "fingerprint", "--model", m, "--out", out, "--k", "-1"])
    _one_line(capsys, exc.value.code, "--k")


def test_extract_defaults_to_uniform_points_for_a_model_of_another_shape(tmp_path, capsys):
    model = _small_resnet(1, train=False)
    model.save(tmp_path / "r.h5")
    out = tmp_path / "fp.npz"
    argv = ["-q", "extract", "--model", str(tmp_path / "r.h5"), "--out", str(out), "--n", "4", "--max-iter", "5"]
    assert main(argv) == 0
    assert "points start uniform" in capsys.readouterr().err
    assert load_fingerprint(out).metadata["strategy"].startswith("R")
    _one_line(capsys, main([*argv, "--init", "T"]), "--data")


def test_the_grid_grows_while_the_margin_rises_at_its_edge():
    rates = {0.1: 0.2, 0.3: 0.4, 1.0: 0.6, 3.0: 0.8, 9.0: 1.0, 27.0: 1.0}  # a copy's rate at each k

    class FP(_FP):
        def __init__(self, k):
            self.k, self.x, self.y = k, np.full((10, 1), k), np.zeros(10)

    class Copy:
        def predict_labels(self, x):
            return (np.arange(10) >= round(10 * rates[float(x[0, 0])])).astype(int)

    seen = []

    def extract(setting):
        seen.append(setting.k)
        return FP(setting.k)

    grid = [T.Setting(k, "R", "L") for k in (0.1, 0.3, 1.0, 3.0)]
    tuning = T.tune(extract, grid, [("c", Copy())], progress=False)
    assert seen == [0.1, 0.3, 1.0, 3.0, 9.0, 27.0]  # still rising at 9: one more; flat at 27: no third
    assert tuning.best.setting.k == 9.0 and tuning.best.worst_copy == 1.0
