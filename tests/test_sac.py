"""SAC-m and SAC-w (issue 15): the correlation distance, the CutMix samples, the statistic's direction, files
with target outputs, verification of logit and probability suspects."""

import numpy as np
import pytest
from conftest import SHAPE, make_tiny_keras3

from ipguard_tf.core import registry
from ipguard_tf.core.errors import DataError, ModelError, ParameterError
from ipguard_tf.core.statistics import Verification, correlation_matrix, sac_distance
from ipguard_tf.io.fingerprint_file import load_fingerprint, save_fingerprint
from ipguard_tf.methods.sac import SACm, SACw, cutmix_box, cutmix_samples
from ipguard_tf.verification.suspects import verify


@pytest.fixture(scope="module")
def owner_data():
    return np.random.default_rng(21).random((300,) + SHAPE, dtype=np.float32)


def test_distance_is_zero_on_itself_symmetric_and_bounded():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    c = correlation_matrix(a)
    assert c.shape == (30, 30) and np.allclose(np.diag(c), 0) and np.allclose(c, c.T)
    assert 0 <= c.min() and c.max() <= 1
    assert sac_distance(a, a) == 0.0 and sac_distance(a, 3.0 * a) == pytest.approx(0.0, abs=1e-12)  # cosine
    assert sac_distance(a, b) == pytest.approx(sac_distance(b, a)) and 0 < sac_distance(a, b) <= 1
    with pytest.raises(ParameterError):
        sac_distance(a, b[:10])


def _official_distance(a, b):
    """SAC's ``correlation_wrong.py`` written out term by term (issue 31): rows divided by max(norm, 1e-12)
    (torch's ``F.normalize``), ``C_ij = (1 - u_i . u_j) / 2``, the sum of ``|C_a - C_b|`` over all N x N entries
    (the diagonal included) divided by N * N."""

    def corr(o):
        n = len(o)
        u = [row / max(float(np.sqrt(np.sum(row * row))), 1e-12) for row in np.asarray(o, np.float64)]
        return [[(1.0 - float(np.dot(u[i], u[j]))) / 2.0 for j in range(n)] for i in range(n)]

    ca, cb = corr(a), corr(b)
    n = len(ca)
    return sum(abs(ca[i][j] - cb[i][j]) for i in range(n) for j in range(n)) / (n * n)


def test_distance_is_the_official_definition_on_logits_of_any_width():
    """The distance is the official one entry by entry (a zero row correlates 0.5 with every row, its own
    included), on outputs of different widths (a transfer copy's 4 logits against the source's 10)."""
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(12, 10)).astype(np.float32), rng.normal(size=(12, 4)).astype(np.float32)
    a[3] = 0.0
    assert correlation_matrix(a)[3, 3] == 0.5 and np.all(correlation_matrix(a)[3] == 0.5)
    assert sac_distance(a, b) == pytest.approx(_official_distance(a, b), abs=1e-12)
    assert sac_distance(a, a * rng.uniform(0.5, 2.0, size=(12, 1))) == pytest.approx(0.0, abs=1e-12)  # per-row scale


def test_cutmix_pastes_one_corner_box_from_a_permutation_of_the_unmixed_images():
    """As ``cut_mix.py``: every sample differs from its image only inside one box, the same for all, filled from
    the *unmixed* image a permutation assigns it (an image may draw itself)."""
    imgs = np.random.default_rng(8).random((100, 28, 28, 1), dtype=np.float32)
    for seed in range(5):
        out = cutmix_samples(imgs, 0.2, np.random.default_rng(seed))
        changed = np.any(out != imgs, axis=(0, 3))
        rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert changed[top:bottom, left:right].all() and changed.sum() == (bottom - top) * (right - left)
        assert bottom - top <= 4 and right - left <= 4
        box = (slice(top, bottom), slice(left, right))
        donors = [
            int(np.flatnonzero(np.all(imgs[(slice(None),) + box] == out[(i,) + box], axis=(1, 2, 3)))[0])
            for i in range(len(imgs))
        ]
        assert sorted(donors) == list(range(len(imgs)))  # a permutation of the originals


def test_cutmix_box_lies_in_a_corner_and_samples_are_deterministic(owner_data):
    for seed in range(20):
        top, bottom, left, right = cutmix_box(28, 28, 0.2, np.random.default_rng(seed))
        assert 0 < bottom - top <= 4 and 0 < right - left <= 4  # int(28 * 0.2) = 5: 2 on each side, clipped
    imgs = owner_data[:50]
    a = cutmix_samples(imgs, 0.2, np.random.default_rng(3))
    b = cutmix_samples(imgs, 0.2, np.random.default_rng(3))
    assert np.array_equal(a, b) and a.min() >= 0 and a.max() <= 1
    changed = np.any(a != imgs, axis=(0, 3))  # which pixels differ in any sample: one box only
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    assert len(rows) <= 2 and len(cols) <= 2  # 8x8 images: int(8 * 0.2) = 1 -> a 0..2-pixel box
    t = cutmix_samples(imgs, 0.2, np.random.default_rng(3), transpose=True)
    assert np.array_equal(t, a.transpose(0, 2, 1, 3))


def test_box_centre_is_outside_the_middle_band():
    lo, hi = 28 / 6, 5 * 28 / 6
    for seed in range(50):
        rng = np.random.default_rng(seed)
        top, bottom, left, right = cutmix_box(28, 28, 0.2, rng)
        cy = min(max(top + 2, 0), 27) if top > 0 else bottom - 2
        cx = min(max(left + 2, 0), 27) if left > 0 else right - 2
        assert not (lo < cy < hi) and not (lo < cx < hi), (top, bottom, left, right)


def test_sac_m_fingerprint_verifies_itself_at_zero_and_flips_the_verdict(owner_data, tmp_path):
    target, other = make_tiny_keras3(0), make_tiny_keras3(1)
    fp = SACm(seed=4).generate(target, 40, owner_data)
    assert fp.metadata["statistic"] == "sac_distance" and fp.metadata["outputs_kind"] == "logits"
    assert fp.outputs.shape == (40, 4) and np.array_equal(fp.y, np.argmax(fp.outputs, axis=1))
    again = SACm(seed=4).generate(target, 40, owner_data)
    assert np.array_equal(again.x, fp.x)  # deterministic for a seed
    save_fingerprint(fp, tmp_path / "sac.npz")
    loaded = load_fingerprint(tmp_path / "sac.npz")
    assert np.array_equal(loaded.outputs, fp.outputs)
    me = verify(loaded, target)
    assert me.statistic == "sac_distance" and me.value == pytest.approx(0.0, abs=1e-6) and me.verdict == 1
    assert me.threshold == registry.SAC_DISTANCE.default_threshold and me.matching_rate is None
    them = verify(loaded, other)
    assert them.value > 0.0
    assert verify(loaded, other, threshold=them.value / 2).verdict == 0  # lower is copy: above -> not a copy
    assert verify(loaded, other, threshold=min(1.0, them.value * 2)).verdict == 1
    d = them.as_dict()
    assert d["statistic"] == "sac_distance" and "matching_rate" not in d


def test_sac_file_tampering_is_detected(owner_data, tmp_path):
    import io
    import zipfile

    fp = SACm(seed=1).generate(make_tiny_keras3(0), 10, owner_data)
    p = tmp_path / "fp.npz"
    save_fingerprint(fp, p)
    with np.load(p, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["outputs"] = arrays["outputs"] + 1.0
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    p.write_bytes(buf.getvalue())
    from ipguard_tf.core.errors import FingerprintFileError

    with pytest.raises(FingerprintFileError, match="SHA-256"):
        load_fingerprint(p)
    assert zipfile.is_zipfile(p)


def test_sac_w_uses_misclassified_examples(owner_data):
    target = make_tiny_keras3(0)
    pred = np.argmax(target.predict(owner_data, verbose=0), axis=1)
    labels = pred.copy()
    labels[:25] = (labels[:25] + 1) % 4  # exactly 25 examples misclassified
    fp = SACw(seed=2).generate(target, 20, owner_data, train_y=labels)
    assert fp.metadata["method"] == "sac-w"
    idx = [int(np.flatnonzero(np.all(owner_data == x, axis=(1, 2, 3)))[0]) for x in fp.x]
    assert all(i < 25 for i in idx) and len(set(idx)) == 20
    with pytest.raises(ModelError, match="misclassifies 25"):
        SACw(seed=2).generate(target, 30, owner_data, train_y=labels)
    with pytest.raises(DataError, match="labels"):
        SACw().generate(target, 5, owner_data)


def test_label_only_suspects_are_refused_and_probability_suspects_compared_as_probabilities(owner_data):
    from ipguard_tf.models import tflite
    from ipguard_tf.models.classifier import as_classifier

    target = make_tiny_keras3(0, softmax=True)
    fp = SACm(seed=0).generate(target, 30, owner_data)
    labels_only = as_classifier(lambda x: np.zeros(len(x), np.int64), output="labels", input_shape=SHAPE, num_classes=4)
    with pytest.raises(ModelError, match="labels only"):
        verify(fp, labels_only)
    copy = tflite.TFLiteModel(tflite.convert(target, "float32"))  # a softmax output: probabilities
    v = verify(fp, copy)
    probs = target.predict(fp.x, verbose=0)
    from ipguard_tf.core.statistics import softmax

    assert v.value == pytest.approx(sac_distance(softmax(fp.outputs), probs), abs=1e-6)
    assert v.value < 1e-4 and v.verdict == 1


def test_verdict_direction_for_a_distance():
    stat = registry.SAC_DISTANCE
    assert Verification.of_statistic("s", stat, 0.01, 100, 0.05).verdict == 1
    assert Verification.of_statistic("s", stat, 0.2, 100, 0.05).verdict == 0
    from ipguard_tf.core import metrics

    s = metrics.summary([0.01, 0.02], [0.2, 0.3], 0.05, higher_is_copy=False)
    assert s["auc"] == 1.0 and s["aruc"] > 0.1 and s["robustness"] == 1.0 and s["uniqueness"] == 1.0
    assert s["gap"] == pytest.approx(0.18) and s["max_positive"] == 0.02


def _fmnist_model(seed):
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inp)
    return keras.Model(inp, keras.layers.Dense(10)(keras.layers.Flatten()(x)))


@pytest.mark.skipif(
    not __import__("os").path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
    and not __import__("os").environ.get("IPGUARD_FASHION_MNIST_DIR"),
    reason="Fashion-MNIST not installed",
)
@pytest.mark.parametrize("method", ["sac-m", "sac-w"])
def test_cli_extracts_and_verifies_sac(method, tmp_path, capsys):
    import json

    from ipguard_tf.cli import main

    _fmnist_model(0).save(tmp_path / "target.keras")
    _fmnist_model(1).save(tmp_path / "other.keras")
    fp = tmp_path / "fp.npz"
    assert (
        main(
            [
                "-q",
                "extract",
                "--model",
                str(tmp_path / "target.keras"),
                "--method",
                method,
                "--n",
                "20",
                "--dataset",
                "fashion_mnist",
                "--seed",
                "3",
                "--out",
                str(fp),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "-q",
                "verify",
                "--fingerprint",
                str(fp),
                "--suspect",
                str(tmp_path / "target.keras"),
                "--suspect",
                str(tmp_path / "other.keras"),
                "--json",
            ]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert [r["statistic"] for r in rows] == ["sac_distance"] * 2
    assert rows[0]["value"] == pytest.approx(0.0, abs=1e-6) and rows[0]["verdict"] == 1 and rows[1]["value"] > 0
    assert main(["-q", "verify", "--fingerprint", str(fp), "--suspect", str(tmp_path / "other.keras")]) == 0
    out = capsys.readouterr().out
    assert "sac_distance" in out and "<= threshold" in out
    assert (
        main(
            [
                "-q",
                "extract",
                "--model",
                str(tmp_path / "target.keras"),
                "--method",
                method,
                "--k",
                "1",
                "--out",
                str(fp),
            ]
        )
        == 2
    )
