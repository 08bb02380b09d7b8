"""TFLite suspects and quantized copies (issue 14): labels equal the interpreter's own, batching and int8
(de)quantisation, the CLI, foreign operators refused."""

import json
import warnings

import numpy as np
import pytest
from conftest import SHAPE, make_tiny_keras3, make_tiny_tf_keras

from ipguard_tf.cli import main
from ipguard_tf.core.errors import ModelError, ParameterError
from ipguard_tf.models import tflite
from ipguard_tf.models.classifier import as_classifier


@pytest.fixture(scope="module")
def keras_model():
    return make_tiny_keras3(3, softmax=True)


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(7).random((37,) + SHAPE, dtype=np.float32)


@pytest.fixture(scope="module")
def converted(keras_model, data):
    return {mode: tflite.convert(keras_model, mode, data) for mode in tflite.MODES}


def _interpreter_labels_one_by_one(content: bytes, x: np.ndarray) -> np.ndarray:
    """What the TFLite interpreter itself answers, one example per invoke, quantising as its tensor says."""
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = tf.lite.Interpreter(model_content=content)
    it.allocate_tensors()
    d_in, d_out = it.get_input_details()[0], it.get_output_details()[0]
    labels = []
    for row in x:
        v = row[None]
        if d_in["dtype"] != np.float32:
            scale, zero = (
                d_in["quantization_parameters"]["scales"][0],
                d_in["quantization_parameters"]["zero_points"][0],
            )
            info = np.iinfo(d_in["dtype"])
            v = np.clip(np.round(v / scale) + zero, info.min, info.max).astype(d_in["dtype"])
        it.set_tensor(d_in["index"], v)
        it.invoke()
        labels.append(int(np.argmax(it.get_tensor(d_out["index"])[0])))
    return np.array(labels)


@pytest.mark.parametrize("mode", tflite.MODES)
def test_labels_equal_the_interpreters_own(converted, data, mode):
    model = tflite.TFLiteModel(converted[mode], batch_size=16)  # 37 = 16 + 16 + 5: a padded last batch
    assert model.output_kind == "probabilities"
    expected = _interpreter_labels_one_by_one(converted[mode], data)
    assert np.array_equal(model.labels(data), expected)
    clf = as_classifier(model)
    assert np.array_equal(clf.predict_labels(data, batch_size=10), expected)
    assert clf.predict_scores(data).shape == (len(data), 4)


def test_int8_copy_is_integer_and_close_to_the_source(keras_model, converted, data):
    m8 = tflite.TFLiteModel(converted["int8"])
    assert m8.input_dtype == np.int8 and m8.output_dtype == np.int8
    p_keras = keras_model.predict(data, verbose=0)
    assert np.max(np.abs(m8(data) - p_keras)) < 0.05  # probabilities quantised in steps of 1/256
    m32 = tflite.TFLiteModel(converted["float32"])
    np.testing.assert_allclose(m32(data), p_keras, atol=1e-5)
    assert np.array_equal(m32.labels(data), np.argmax(p_keras, axis=1))


def test_batch_size_does_not_change_outputs(converted, data):
    a = tflite.TFLiteModel(converted["int8"], batch_size=7)(data)
    b = tflite.TFLiteModel(converted["int8"], batch_size=64)(data)
    assert np.array_equal(a, b)


def test_keras2_model_converts(keras_model, data):
    k2 = make_tiny_tf_keras(keras_model.get_weights(), softmax=True)
    m = tflite.TFLiteModel(tflite.convert(k2, "float16"))
    assert np.array_equal(m.labels(data), np.argmax(k2.predict(data, verbose=0), axis=1))


def test_quantize_postprocess_leaves_the_model_alone(keras_model):
    from types import SimpleNamespace

    from ipguard_tf.zoo.postprocess import quantize

    before = [w.copy() for w in keras_model.get_weights()]
    ds = SimpleNamespace(x_train=np.random.default_rng(1).random((20,) + SHAPE, dtype=np.float32))
    q = quantize(keras_model, ds, "int8", calibration_examples=10)
    assert isinstance(q, tflite.TFLiteModel) and q.input_dtype == np.int8
    assert all(np.array_equal(a, b) for a, b in zip(before, keras_model.get_weights()))


def test_bad_files_and_parameters(tmp_path, keras_model):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ModelError, match="not a TensorFlow Lite file"):
        tflite.TFLiteModel(junk)
    with pytest.raises(ModelError, match="does not exist"):
        tflite.TFLiteModel(tmp_path / "absent.tflite")
    with pytest.raises(ParameterError, match="mode"):
        tflite.convert(keras_model, "int4")
    with pytest.raises(ParameterError, match="representative"):
        tflite.convert(keras_model, "int8")


def test_tflite_is_not_a_gradient_target(converted):
    from ipguard_tf.methods.ipguard import IPGuard

    clf = as_classifier(tflite.TFLiteModel(converted["float32"]))
    assert not clf.has_logits
    with pytest.raises(ModelError, match="not differentiable|logits"):
        IPGuard(k=1.0, max_iter=2, init="R", label="R").generate(clf, 2)


def test_flex_ops_are_refused_unless_unsafe(tmp_path):
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    def f(x):
        return x + tf.strings.to_number(tf.strings.as_string(x))

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], None)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    path = tflite.save(conv.convert(), tmp_path / "flex.tflite")
    with pytest.raises(tflite.TFLiteUnsafeError, match="FlexAsString"):
        tflite.TFLiteModel(path)
    assert tflite.TFLiteModel(path, unsafe=True).num_classes == 4


def _fmnist_model(seed):
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inp)
    x = keras.layers.Flatten()(x)
    return keras.Model(inp, keras.layers.Dense(10, activation="softmax")(x))


def test_cli_verifies_int8_and_float16_copies(tmp_path, capsys):
    from ipguard_tf import load_fingerprint

    target = _fmnist_model(0)
    target.save(tmp_path / "target.keras")
    fp_path = tmp_path / "fp.npz"
    assert (
        main(
            [
                "-q",
                "extract",
                "--model",
                str(tmp_path / "target.keras"),
                "--init",
                "R",
                "--label",
                "R",
                "--n",
                "12",
                "--max-iter",
                "20",
                "--k",
                "1",
                "--seed",
                "0",
                "--out",
                str(fp_path),
            ]
        )
        == 0
    )
    fp = load_fingerprint(fp_path)
    rep = np.random.default_rng(0).random((50, 28, 28, 1), dtype=np.float32)
    paths = {
        m: tflite.save(tflite.convert(target, m, rep), tmp_path / f"target_{m}.tflite") for m in ("int8", "float16")
    }
    capsys.readouterr()
    assert (
        main(
            [
                "-q",
                "verify",
                "--fingerprint",
                str(fp_path),
                "--suspect",
                str(paths["int8"]),
                "--suspect",
                str(paths["float16"]),
                "--json",
            ]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    for row, mode in zip(rows, ("int8", "float16")):
        own = _interpreter_labels_one_by_one(paths[mode].read_bytes(), fp.x)
        assert row["matching_rate"] == pytest.approx(float(np.mean(own == fp.y)))
    assert rows[1]["matching_rate"] >= 0.9  # float16 weights barely move the outputs
