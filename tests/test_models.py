"""Adapters: Keras 3 / Keras 2 models and files, softmax heads, callables, label-only models, input checks."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import SHAPE, make_tiny_keras3, make_tiny_tf_keras

from ipguard_tf import IPGuard, as_classifier, verify
from ipguard_tf.core.errors import ModelError
from ipguard_tf.models.classifier import keras_logits_model


@pytest.fixture(scope="module")
def pair():
    """A Keras 3 logits model and the same weights as a Keras 3 softmax model and a Keras 2 softmax model."""
    logits = make_tiny_keras3(1, softmax=False)
    soft3 = make_tiny_keras3(1, softmax=True)
    soft3.set_weights(logits.get_weights())
    soft2 = make_tiny_tf_keras(logits.get_weights(), softmax=True)
    return logits, soft3, soft2


def test_softmax_head_gives_true_logits(pair, tiny_data):
    logits, soft3, soft2 = pair
    ref = logits(tiny_data).numpy()
    for m in (soft3, soft2):
        got = as_classifier(m).predict_logits(tiny_data)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_softmax_layer_and_activation_layer_heads(tiny_data):
    import keras

    base = make_tiny_keras3(2)
    for head in (keras.layers.Softmax(), keras.layers.Activation("softmax")):
        m = keras.Model(base.inputs, head(base.outputs[0]))
        lm, note = keras_logits_model(m)
        assert "dropped" in note
        np.testing.assert_allclose(as_classifier(m).predict_logits(tiny_data), base(tiny_data).numpy(), atol=1e-5)


def test_input_model_unchanged(pair, tiny_data):
    _, soft3, _ = pair
    before = [w.copy() for w in soft3.get_weights()]
    out_before = soft3(tiny_data).numpy()
    as_classifier(soft3).predict_logits(tiny_data)
    assert soft3.layers[-1].activation.__name__ == "softmax"
    np.testing.assert_array_equal(soft3(tiny_data).numpy(), out_before)
    for a, b in zip(before, soft3.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_verify_self_keras3_file_and_keras2_h5_softmax(pair, tiny_data, tmp_path):
    logits, soft3, soft2 = pair
    p3 = tmp_path / "m.keras"
    logits.save(p3)
    p2 = tmp_path / "m.h5"
    soft2.save(p2)
    fp = IPGuard(k=0.5, learning_rate=0.01, max_iter=200, seed=0).generate(str(p3), 16, tiny_data)
    assert verify(fp, str(p3)).matching_rate == 1.0
    assert verify(fp, str(p2)).matching_rate == 1.0
    # and the other way round: extracted from the Keras 2 .h5 with its softmax head
    fp2 = IPGuard(k=0.5, learning_rate=0.01, max_iter=200, seed=0).generate(str(p2), 16, tiny_data)
    # the rebuilt logits head gives the same search as the Keras 3 logits model
    assert fp2.n_converged == fp.n_converged >= 1
    np.testing.assert_allclose(fp2.x, fp.x, atol=1e-4)
    assert verify(fp2, str(p2)).matching_rate == 1.0
    assert verify(fp2, str(p3)).matching_rate == 1.0
    # same weights -> same hash, whichever Keras wrote them
    assert fp.metadata["target"]["weights_sha256"] == fp2.metadata["target"]["weights_sha256"]


def test_savedmodel_directory(pair, tiny_data, tmp_path):
    _, _, soft2 = pair
    d = tmp_path / "sm"
    soft2.save(str(d), save_format="tf")
    clf = as_classifier(str(d))
    np.testing.assert_array_equal(clf.predict_labels(tiny_data), as_classifier(soft2).predict_labels(tiny_data))


def test_raw_savedmodel_without_keras(pair, tiny_data, tmp_path):
    logits, _, _ = pair

    class Mod(tf.Module):
        def __init__(self, m):
            self.m = m

        @tf.function(input_signature=[tf.TensorSpec([None, *SHAPE], tf.float32)])
        def serve(self, x):
            return {"probs": tf.nn.softmax(self.m(x))}

    mod = Mod(logits)
    d = tmp_path / "raw"
    tf.saved_model.save(mod, str(d), signatures={"serving_default": mod.serve})
    clf = as_classifier(str(d))
    ref = logits(tiny_data).numpy()
    got = clf.predict_logits(tiny_data)
    # log-probabilities: logit differences are exact
    np.testing.assert_allclose(got - got[:, :1], ref - ref[:, :1], atol=1e-4)
    np.testing.assert_array_equal(clf.predict_labels(tiny_data), ref.argmax(1))


def test_callables_logits_probs_labels(tiny_model, tiny_data):
    ref = tiny_model(tiny_data).numpy()
    c1 = as_classifier(lambda x: tiny_model(x), input_shape=SHAPE)
    np.testing.assert_allclose(c1.predict_logits(tiny_data), ref, atol=1e-5)
    c2 = as_classifier(lambda x: tf.nn.softmax(tiny_model(x)), input_shape=SHAPE)
    got = c2.predict_logits(tiny_data)
    np.testing.assert_allclose(got - got[:, :1], ref - ref[:, :1], atol=1e-4)
    c3 = as_classifier(lambda x: np.argmax(tiny_model(x).numpy(), 1), input_shape=SHAPE)
    assert not c3.has_logits
    np.testing.assert_array_equal(c3.predict_labels(tiny_data), ref.argmax(1))
    with pytest.raises(ModelError):
        IPGuard().generate(c3, 2, tiny_data)


def test_label_only_suspect_verifies(tiny_model, tiny_data):
    fp = IPGuard(k=0.5, learning_rate=0.01, max_iter=100).generate(tiny_model, 8, tiny_data)
    labeler = as_classifier(lambda x: np.argmax(tiny_model(x).numpy(), 1), output="labels", input_shape=SHAPE)
    assert verify(fp, labeler).matching_rate == 1.0


def test_sklearn_label_predictor(tiny_model, tiny_data):
    from sklearn.tree import DecisionTreeClassifier

    y = np.argmax(tiny_model(tiny_data).numpy(), 1)
    tree = DecisionTreeClassifier(random_state=0).fit(tiny_data.reshape(len(tiny_data), -1), y)
    clf = as_classifier(tree)
    np.testing.assert_array_equal(clf.predict_labels(tiny_data), y)
    # its class probabilities are its scores (SAC's correlation needs them), in the columns of its labels
    probs = clf.predict_scores(tiny_data)
    assert clf.has_scores and clf.scores_kind == "probabilities" and probs.shape[1] == int(y.max()) + 1
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(probs[:, tree.classes_], tree.predict_proba(tiny_data.reshape(64, -1)))


def test_input_shape_mismatch(tiny_model):
    clf = as_classifier(tiny_model)
    with pytest.raises(ModelError, match="shape"):
        clf.predict_labels(np.zeros((2, 28, 28, 1), np.float32))


def test_value_range_checked(tiny_model):
    clf = as_classifier(tiny_model)
    with pytest.raises(ModelError, match=r"\[0, 1\]"):
        clf.predict_labels(np.full((2,) + SHAPE, 255.0, np.float32))
    with pytest.raises(ModelError, match="NaN"):
        clf.predict_labels(np.full((2,) + SHAPE, np.nan, np.float32))


def test_input_scale(tiny_model, tiny_data):
    scaled = as_classifier(lambda x: tiny_model(x / 255.0), input_shape=SHAPE, input_scale=255.0)
    np.testing.assert_allclose(scaled.predict_logits(tiny_data), tiny_model(tiny_data).numpy(), atol=1e-5)


def test_bad_paths(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        as_classifier(str(tmp_path / "none.keras"))
    (tmp_path / "junk.keras").write_bytes(b"junk")
    with pytest.raises(ModelError, match="cannot load"):
        as_classifier(str(tmp_path / "junk.keras"))
    (tmp_path / "m.pt").write_bytes(b"x")
    with pytest.raises(ModelError, match="unknown model format"):
        as_classifier(str(tmp_path / "m.pt"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(ModelError, match="SavedModel"):
        as_classifier(str(tmp_path / "folder"))
