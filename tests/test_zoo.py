"""The zoo: architectures, post-processings (pure, properties held) and the resumable builder, on small data."""

import json

import numpy as np
import pytest
from conftest import toy_zoo_dataset

from ipguard_tf.zoo import architectures as A
from ipguard_tf.zoo import postprocess as P

SHAPE = (28, 28, 1)


@pytest.fixture(scope="module")
def small_ds():
    return toy_zoo_dataset()


@pytest.fixture(scope="module")
def trained(small_ds):
    from ipguard_tf.zoo.train import Recipe, train_model

    return train_model(small_ds, Recipe("fmnist_cnn", epochs=3), seed=0, verbose=0)


@pytest.mark.parametrize(
    "name, params", [("fmnist_cnn", 220234), ("lenet5", 61706), ("resnet20", None), ("vgg16", None), ("wrn22_4", None)]
)
def test_architectures_build_on_28x28(name, params):
    import keras

    m = A.build_architecture(name, SHAPE, 10)
    assert m.output_shape == (None, 10)
    assert m.layers[-1].activation is keras.activations.linear or m.layers[-1].get_config()["activation"] == "linear"
    if params:
        assert m.count_params() == params


def test_published_parameter_counts():
    # ResNet20 on CIFAR: 0.27 M (He et al. 2016); WRN-22-4 on CIFAR-100: 4.3 M (Zagoruyko & Komodakis 2016)
    assert abs(A.resnet20((32, 32, 3), 10).count_params() - 0.27e6) < 0.01e6
    assert abs(A.wrn22_4((32, 32, 3), 100).count_params() - 4.3e6) < 0.05e6


def test_keras2_twin_same_function():
    import tf_keras

    m = A.build_architecture("lenet5", SHAPE, 10)
    t = A.twin(m, "lenet5", SHAPE, 10, tf_keras)
    x = np.random.default_rng(1).random((4,) + SHAPE, dtype=np.float32)
    np.testing.assert_allclose(m(x).numpy(), t(x).numpy(), atol=1e-5)


def _weights(m):
    return [w.copy() for w in m.get_weights()]


@pytest.mark.parametrize(
    "fn", [P.fine_tune_last_layer, P.fine_tune_all_layers, P.retrain_last_layer, P.retrain_all_layers]
)
def test_finetune_retrain_pure_and_scoped(fn, trained, small_ds):
    before = _weights(trained)
    new = fn(trained, small_ds, epochs=1, verbose=0)
    for a, b in zip(before, trained.get_weights()):
        np.testing.assert_array_equal(a, b)  # input unchanged
    changed = [not np.array_equal(a, b) for a, b in zip(before, new.get_weights())]
    if fn in (P.fine_tune_last_layer, P.retrain_last_layer):
        assert changed[-2:] == [True, True] and not any(changed[:-2]), "only the last layer may change"
    else:
        assert changed[0] and changed[-2]
    if fn in (P.retrain_last_layer, P.retrain_all_layers):
        assert new is not trained


@pytest.mark.parametrize("p", [0.3, 0.5])
def test_weight_pruning_reaches_sparsity(p, trained, small_ds):
    before = _weights(trained)
    new = P.weight_prune(trained, small_ds, p, architecture="fmnist_cnn", epochs=1, verbose=0)
    assert abs(P.measured_sparsity(new) - p) <= 0.01
    for a, b in zip(before, trained.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert P.measured_sparsity(trained) < 0.01
    # each pruned layer on its own holds the sparsity (TF-MOT prunes per layer)
    for name, k in P._prunable_kernels(new):
        assert abs(np.mean(k == 0) - p) <= 0.01, name


def test_filter_pruning_fraction_and_persistence(trained, small_ds):
    before = _weights(trained)
    new, fractions = P.filter_prune(trained, small_ds, 3 / 16, epochs=1, verbose=0)
    assert set(fractions) == {"conv1", "conv2"}
    for layer, f in fractions.items():
        assert f == pytest.approx(3 / 16)
        k = new.get_layer(layer).get_weights()
        zero = np.all(k[0].reshape(-1, k[0].shape[-1]) == 0, axis=0)
        assert np.all(k[1][zero] == 0)  # bias of pruned filters stays 0 after retraining
    for a, b in zip(before, trained.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_filter_pruning_leaves_residual_block_last_conv():
    m = A.resnet20(SHAPE, 10)
    eligible = P.eligible_conv_layers(m)
    assert eligible and all(n.endswith("_conv1") for n in eligible)
    masks = P.filter_masks(m, 2 / 16)
    P.apply_filter_masks(m, masks)
    for fm in masks:
        assert len(fm.pruned) == round(2 / 16 * fm.n_filters) and fm.bn is not None
        assert np.all(m.get_layer(fm.bn).get_weights()[0][fm.pruned] == 0)


def test_bad_pruning_parameters(trained, small_ds):
    with pytest.raises(ValueError):
        P.weight_prune(trained, small_ds, 1.5, architecture="fmnist_cnn")
    with pytest.raises(ValueError):
        P.filter_prune(trained, small_ds, 0.0)


def test_forest_skops_round_trip(small_ds, tmp_path):
    from ipguard_tf import as_classifier
    from ipguard_tf.zoo.forest import load_forest, save_forest, train_forest

    rf = train_forest(small_ds, seed=1)
    save_forest(rf, tmp_path / "rf.skops")
    back = load_forest(tmp_path / "rf.skops")
    np.testing.assert_array_equal(
        as_classifier(back).predict_labels(small_ds.x_test),
        rf.predict(small_ds.x_test.reshape(len(small_ds.x_test), -1)),
    )
    assert len(back.estimators_) == 20


@pytest.mark.slow
def test_builder_resumes_and_lists(small_ds, tmp_path, capsys, monkeypatch):
    from ipguard_tf.cli import main
    from ipguard_tf.models.classifier import content_sha256
    from ipguard_tf.zoo import builder as B
    from ipguard_tf.zoo.members import load_member

    prof = B.Profile("test", same_arch=2, lenet5=1, vgg16=0, forests=1, max_wp=0.2, max_fp_sixteenths=2, cae_members=1)
    out = tmp_path / "zoo"
    calls = []
    real_store = B.ZooBuilder._store

    def crash_after_three(self, name, model, info, suffix=".keras"):
        calls.append(name)
        if len(calls) == 4:
            raise KeyboardInterrupt  # killed mid-build
        return real_store(self, name, model, info, suffix)

    monkeypatch.setattr(B.ZooBuilder, "_store", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        B.ZooBuilder("fashion_mnist", out, prof, dataset=small_ds, verbose=0).build()
    monkeypatch.setattr(B.ZooBuilder, "_store", real_store)
    done = [r["name"] for r in B.read_manifest(out)["models"]]
    assert done == calls[:3]
    assert not list(out.glob(".*.tmp")) and not list(out.glob(".*keras"))  # nothing half-written

    trained_again = []
    orig_train = B.ZooBuilder._entry

    def spy(self, name, *args, **kwargs):
        if self.record(name) is None:
            trained_again.append(name)
        return orig_train(self, name, *args, **kwargs)

    monkeypatch.setattr(B.ZooBuilder, "_entry", spy)
    m = B.ZooBuilder("fashion_mnist", out, prof, dataset=small_ds, verbose=0).build()
    assert not set(trained_again) & set(done), "a resumed build retrains nothing already recorded"
    names = {r["name"] for r in m["models"]}
    assert {
        "target",
        "ftll",
        "ftal",
        "rtll",
        "rtal",
        "same_arch_seed01",
        "same_arch_seed02",
        "lenet5_seed01",
        "rf_seed01",
        "tflite_float16",
        "tflite_int8",
    } <= names
    quant = {r["name"]: r for r in m["models"] if r["family"] == "quantized"}
    assert quant["tflite_int8"]["params"]["calibration_examples"] > 0 and quant["tflite_int8"]["file"].endswith(
        ".tflite"
    )
    wp = [r for r in m["models"] if r["family"] == "WP"]
    for r in wp:
        assert abs(r["measured_sparsity"] - r["sparsity"]) <= 0.01
    for r in m["models"]:
        assert (
            r["role"] in ("target", "positive", "negative", "surrogate", "reference")
            and "seed" in r
            and "test_accuracy" in r
        )
        assert (out / r["file"]).exists()
    assert m["complete"]
    # CAE's ensemble: the surrogate is a student of the target (trained on the target's labels, not the true
    # ones), the reference is trained on the true labels
    cae = {r["role"]: r for r in m["models"] if r["family"].startswith("cae_")}
    assert set(cae) == {"surrogate", "reference"} and cae["surrogate"]["maker"] == "student"
    assert cae["reference"]["maker"] == "trained"
    from ipguard_tf.models.classifier import as_classifier

    seen = {}
    monkeypatch.setattr(B, "train_model", lambda data, recipe, seed, verbose=0: seen.setdefault("y", data.y_train))
    from dataclasses import replace

    relabelled = replace(small_ds, y_train=(small_ds.y_train + 1) % 10)  # true labels the target never predicts
    b = B.ZooBuilder("fashion_mnist", out, prof, dataset=relabelled, verbose=0)
    b._load_state()
    B.MAKERS["student"](b, cae["surrogate"])
    target_labels = as_classifier(load_member(out, "target")).predict_labels(small_ds.x_train)
    assert np.array_equal(seen["y"], target_labels) and not np.array_equal(seen["y"], relabelled.y_train)
    monkeypatch.undo()

    # zoo list prints Table 2 from the manifest
    assert main(["-q", "zoo", "list", str(out)]) == 0
    table = capsys.readouterr().out
    target_acc = next(r for r in m["models"] if r["name"] == "target")["test_accuracy"]
    assert f"{target_acc:.4f}" in table and "same_arch" in table and "random_forest" in table

    # a missing member is rebuilt on demand
    (out / "rf_seed01.skops").unlink()
    sha = next(r for r in m["models"] if r["name"] == "rf_seed01")["content_sha256"]
    forest = load_member(out, "rf_seed01", dataset=small_ds)
    assert len(forest.estimators_) == 20 and (out / "rf_seed01.skops").exists()
    assert content_sha256(forest) == sha, "deterministic rebuild"
    (out / "lenet5_seed01.keras").unlink()
    lenet = load_member(out, "lenet5_seed01", dataset=small_ds)
    rec = next(r for r in m["models"] if r["name"] == "lenet5_seed01")
    assert content_sha256(lenet) == rec["content_sha256"], "deterministic retraining"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["schema"] == B.SCHEMA

    # verify over the whole zoo: every member's matching rate, robustness/uniqueness and ARUC
    from ipguard_tf import IPGuard, save_fingerprint

    fp = IPGuard(k=0.5, max_iter=50, seed=0).generate(load_member(out, "target"), 10, small_ds.x_train)
    save_fingerprint(fp, tmp_path / "fp.npz")
    capsys.readouterr()
    assert main(["-q", "verify", "--fingerprint", str(tmp_path / "fp.npz"), "--suspect", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    roles = {r["suspect"].rsplit("/", 1)[1]: r.get("role") for r in res["suspects"]}
    assert roles["target"] == "target" and roles["ftll"] == "positive" and roles["rf_seed01"] == "negative"
    assert not any(n.startswith("cae_") for n in roles)  # CAE's ensemble is not verified as a suspect
    assert {"robustness", "uniqueness", "aruc", "auc", "gap"} <= set(res["summary"])
    assert main(["-q", "verify", "--fingerprint", str(tmp_path / "fp.npz"), "--suspect", str(out)]) == 0
    assert "ARUC" in capsys.readouterr().out

    # verifying a zoo holds one suspect in memory at a time: when a member is loaded, no earlier one is alive
    import gc
    import weakref

    import ipguard_tf.verification.suspects as VS

    alive, held_at_load = [], []
    real_load = VS.load_member

    def tracked(*args, **kwargs):
        gc.collect()
        held_at_load.append(sum(r() is not None for r in alive))
        model = real_load(*args, **kwargs)
        alive.append(weakref.ref(model))
        return model

    monkeypatch.setattr(VS, "load_member", tracked)
    assert main(["-q", "verify", "--fingerprint", str(tmp_path / "fp.npz"), "--suspect", str(out), "--json"]) == 0
    suspects = [r for r in m["models"] if r["role"] not in ("surrogate", "reference")]  # CAE's own: no suspects
    assert len(held_at_load) == len(suspects) and held_at_load == [0] * len(held_at_load)

    # a member file without its record (a build killed between writing the two) is adopted, not made again:
    # a forest too (its adoption once wrote it as a Keras model)
    from ipguard_tf.zoo import forest as F

    manifest = json.loads((out / "manifest.json").read_text())
    flat = small_ds.x_test.reshape(len(small_ds.x_test), -1)
    before = load_member(out, "rf_seed01").predict(flat)
    manifest["models"] = [r for r in manifest["models"] if r["name"] != "rf_seed01"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(F, "train_forest", lambda *a, **k: pytest.fail("an orphan file is adopted, not retrained"))
    m = B.ZooBuilder("fashion_mnist", out, prof, dataset=small_ds, verbose=0).build()
    adopted = next(r for r in m["models"] if r["name"] == "rf_seed01")
    assert adopted["file"] == "rf_seed01.skops" and adopted["role"] == "negative"
    again = load_member(out, "rf_seed01")
    assert len(again.estimators_) == 20 and np.array_equal(again.predict(flat), before)


@pytest.mark.parametrize("fn", [P.fine_tune_last_layer, P.retrain_last_layer])
def test_last_layer_training_keeps_frozen_layers_frozen(fn, small_ds):
    """Training only the last layer must give every other layer its own trainable flag back: a layer frozen by
    design (the ImageNet models' fixed pixel_preprocess convolution) stays frozen in the copy."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input(SHAPE)
    x = keras.layers.Conv2D(1, 1, trainable=False, name="pixel_preprocess")(inp)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="conv")(x)
    out = keras.layers.Dense(10, name="logits")(keras.layers.Flatten()(x))
    model = keras.Model(inp, out)
    new = fn(model, small_ds, epochs=1, verbose=0)
    assert [l.trainable for l in new.layers] == [l.trainable for l in model.layers]
    assert not new.get_layer("pixel_preprocess").trainable and new.get_layer("conv").trainable
    np.testing.assert_array_equal(
        new.get_layer("pixel_preprocess").get_weights()[0], model.get_layer("pixel_preprocess").get_weights()[0]
    )


def test_a_second_build_of_one_folder_stops_and_a_replaced_member_is_refused(tmp_path):
    """Issue 34: two builds into one folder cannot both write it (the build lock), and a member file that no longer
    matches its manifest record (bytes and content) is refused when loaded instead of being used."""
    import keras

    from ipguard_tf.zoo.builder import ZooBuilder
    from ipguard_tf.zoo.store import ZooError, build_lock, file_sha256

    with build_lock(tmp_path):
        with pytest.raises(ZooError, match="another build is writing this zoo \\(pid"):
            with build_lock(tmp_path):
                pass
    with build_lock(tmp_path):  # released: a later build proceeds
        pass

    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    m.save(tmp_path / "a.keras")
    b = ZooBuilder.__new__(ZooBuilder)
    rec = {"file": "a.keras", "sha256": file_sha256(tmp_path / "a.keras"), "content_sha256": "0" * 64}
    b._check_member(rec, tmp_path / "a.keras", m)  # same bytes: fine
    rec["sha256"] = "f" * 64
    with pytest.raises(ZooError, match="does not match its manifest record"):
        b._check_member(rec, tmp_path / "a.keras", m)
    b._check_member(dict(rec, in_repo=False), tmp_path / "a.keras", m)  # rebuilt elsewhere: differs legitimately
