"""Untrusted suspect files: code-carrying files are refused by default, loaded with unsafe=True / --unsafe."""

import pickle

import numpy as np
import pytest
from conftest import SHAPE, make_tiny_keras3

from ipguard_tf.models.classifier import as_classifier
from ipguard_tf.models.safety import UnsafeModelError


def _lambda_model(K):
    """A small model with a Lambda layer, in Keras 3 (K = keras) or Keras 2 (K = tf_keras)."""
    inp = K.Input(SHAPE)
    x = K.layers.Flatten()(K.layers.Lambda(lambda t: t * 1.0)(inp))
    return K.Model(inp, K.layers.Dense(4)(x))


def _lambda_models(tmp_path):
    import keras
    import tf_keras

    k3, k2 = _lambda_model(keras), _lambda_model(tf_keras)
    k3.save(tmp_path / "lam.keras")
    k3.save(tmp_path / "lam3.h5")
    k2.save(tmp_path / "lam2.h5")
    k2.save(tmp_path / "lam2_savedmodel")
    return ["lam.keras", "lam3.h5", "lam2.h5", "lam2_savedmodel"]


def test_lambda_layers_refused_unless_unsafe(tmp_path, tiny_data):
    for name in _lambda_models(tmp_path):
        with pytest.raises(UnsafeModelError, match="Lambda layer.*--unsafe"):
            as_classifier(tmp_path / name)
        clf = as_classifier(tmp_path / name, unsafe=True)
        assert clf.predict_labels(tiny_data[:5]).shape == (5,)


def test_pickles_refused_unless_unsafe(tmp_path, tiny_data):
    from sklearn.tree import DecisionTreeClassifier

    tree = DecisionTreeClassifier(random_state=0).fit(tiny_data.reshape(64, -1), np.arange(64) % 4)
    for suffix in (".pkl", ".joblib"):
        path = tmp_path / f"tree{suffix}"
        path.write_bytes(pickle.dumps(tree))
        with pytest.raises(UnsafeModelError, match="pickle file: loading it runs arbitrary code"):
            as_classifier(path)
        clf = as_classifier(path, unsafe=True, input_shape=SHAPE)
        np.testing.assert_array_equal(clf.predict_labels(tiny_data), tree.predict(tiny_data.reshape(64, -1)))


def test_plain_models_load_in_safe_mode(tmp_path, tiny_data):
    m = make_tiny_keras3(0, softmax=True)
    m.save(tmp_path / "plain.keras")
    np.testing.assert_array_equal(
        as_classifier(tmp_path / "plain.keras").predict_labels(tiny_data),
        np.argmax(m.predict(tiny_data, verbose=0), axis=1),
    )


def test_cli_refuses_with_one_line_and_accepts_unsafe(tmp_path, tiny_model, tiny_data, capsys):
    from ipguard_tf.cli import main
    from ipguard_tf.io.fingerprint_file import save_fingerprint
    from ipguard_tf.methods import IPGuard

    _lambda_models(tmp_path)
    save_fingerprint(IPGuard(max_iter=20).generate(tiny_model, 10, tiny_data), tmp_path / "fp.npz")
    args = ["-q", "verify", "--fingerprint", str(tmp_path / "fp.npz"), "--suspect", str(tmp_path / "lam2.h5")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Lambda" in err and "--unsafe" in err and "Traceback" not in err
    assert main(args + ["--unsafe", "--json"]) == 0


def test_unsafe_applies_to_one_load_only(tmp_path, tiny_data):
    """--unsafe lets one Lambda model load; Keras' safe mode is back on for every later load in the process:
    our loader still refuses another Lambda model, and so does Keras itself (here through
    deserialize_keras_object, which obeys the process-wide flag that keras.config.enable_unsafe_deserialization
    would have switched off)."""
    import json
    import zipfile

    import keras

    _lambda_models(tmp_path)
    clf = as_classifier(tmp_path / "lam.keras", unsafe=True)
    assert clf.predict_labels(tiny_data[:3]).shape == (3,)
    other = _lambda_model(keras)
    other.save(tmp_path / "other.keras")
    with pytest.raises(UnsafeModelError, match="Lambda"):
        as_classifier(tmp_path / "other.keras")
    with zipfile.ZipFile(tmp_path / "other.keras") as z:
        config = json.loads(z.read("config.json"))
    with pytest.raises(ValueError, match="(?i)lambda"):
        keras.saving.deserialize_keras_object(config)
    from keras.src.saving import serialization_lib

    assert serialization_lib.in_safe_mode() is not False
