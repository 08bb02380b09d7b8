"""ONNX suspects: a Keras model's ONNX copy (tf2onnx) answers as the model does, NHWC and NCHW inputs (given or
found from the input's dimensions), fixed and free batch dimensions, output kinds, refusals, and the CLI end to
end (a fingerprint of the Keras model verifies its ONNX copies at 1.00; bad files are one line and exit 2)."""

import hashlib
import json
import logging
import sys

import numpy as np
import pytest
from conftest import CLASSES, SHAPE, make_tiny_keras3, make_tiny_tf_keras

pytest.importorskip("onnxruntime")
tf2onnx = pytest.importorskip("tf2onnx")

import tensorflow as tf  # noqa: E402

from ipguard_tf.cli import main  # noqa: E402
from ipguard_tf.core.errors import ModelError, ParameterError  # noqa: E402
from ipguard_tf.models import onnx as O  # noqa: E402
from ipguard_tf.models.classifier import as_classifier, content_sha256, load_model_file  # noqa: E402

H, W, C = SHAPE


def _to_onnx(fn, shape, path, dtype=tf.float32):
    """Write the ONNX conversion of ``fn`` (one input named x of ``shape``, batch first) to ``path``."""
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    proto, _ = tf2onnx.convert.from_function(
        tf.function(fn), input_signature=[tf.TensorSpec(shape, dtype, name="x")], opset=13
    )
    path.write_bytes(proto.SerializeToString())
    return path


def _helper_model(path, inputs, nodes, out_shape=(None, CLASSES)):
    """An ONNX file built node by node: ``inputs`` (name, element type, dims), ``nodes`` (NodeProto) ending in
    output y."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(name, t, dims) for name, t, dims in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
    )
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString())
    return path


@pytest.fixture(scope="module")
def keras_model():
    return make_tiny_keras3(5, softmax=True)


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(3).random((37,) + SHAPE, dtype=np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory, keras_model):
    """The Keras model (.keras) and its ONNX copies: NHWC, NCHW (transposed in front of the model), a fixed batch
    of 1 and of 5, all four dimensions free (ambiguous), a Keras 2 copy, and a logits head."""
    d = tmp_path_factory.mktemp("onnx")
    keras_model.save(d / "target.keras")

    def run(x):
        return keras_model(x, training=False)

    k2 = make_tiny_tf_keras(keras_model.get_weights(), softmax=True)
    logits = make_tiny_keras3(5, softmax=False)
    logits.set_weights(keras_model.get_weights())
    return {
        "keras": d / "target.keras",
        "nhwc": _to_onnx(run, (None,) + SHAPE, d / "target.onnx"),
        "nchw": _to_onnx(lambda x: run(tf.transpose(x, (0, 2, 3, 1))), (None, C, H, W), d / "target_nchw.onnx"),
        "batch1": _to_onnx(run, (1,) + SHAPE, d / "batch1.onnx"),
        "batch5": _to_onnx(run, (5,) + SHAPE, d / "batch5.onnx"),
        "free": _to_onnx(lambda x: run(tf.reshape(x, (-1,) + SHAPE)), (None,) * 4, d / "free.onnx"),
        "k2": _to_onnx(lambda x: k2(x, training=False), (None,) + SHAPE, d / "target_k2.onnx"),
        "logits": _to_onnx(lambda x: logits(x, training=False), (None,) + SHAPE, d / "logits.onnx"),
    }


def test_onnx_copy_answers_as_the_keras_model(keras_model, files, data):
    m = O.ONNXModel(files["nhwc"], batch_size=16)  # 37 = 16 + 16 + 5
    assert m.output_kind == "probabilities" and m.num_classes == CLASSES and m.fixed_batch is None
    p = keras_model.predict(data, verbose=0)
    np.testing.assert_allclose(m(data), p, atol=1e-5)
    assert np.array_equal(m.labels(data), np.argmax(p, axis=1))
    assert m.content_sha256 == hashlib.sha256(files["nhwc"].read_bytes()).hexdigest() == content_sha256(m)
    assert "target.onnx" in repr(m) and "probabilities" in repr(m)
    clf = as_classifier(str(files["nhwc"]))
    assert clf.scores_kind == "probabilities" and clf.weights_sha256 == m.content_sha256
    assert np.array_equal(clf.predict_labels(data, batch_size=10), np.argmax(p, axis=1))
    assert clf.predict_scores(data).shape == (len(data), CLASSES)


@pytest.mark.parametrize("which", ["nchw", "batch1", "batch5", "k2"])
def test_layouts_batches_and_keras2(keras_model, files, data, which):
    expected = np.argmax(keras_model.predict(data, verbose=0), axis=1)
    m = load_model_file(files[which])
    assert isinstance(m, O.ONNXModel)
    assert m.resolve_layout(SHAPE) == ("NCHW" if which == "nchw" else "NHWC")
    assert m.fixed_batch == {"batch1": 1, "batch5": 5}.get(which)
    assert np.array_equal(m.labels(data), expected)
    assert np.array_equal(m.labels(data[:3]), expected[:3])  # shorter than a fixed batch: padded
    given = as_classifier(str(files[which]), layout="NCHW" if which == "nchw" else "NHWC")
    assert O.ONNXModel(files[which], layout="NCHW" if which == "nchw" else "NHWC").input_shape == SHAPE
    assert np.array_equal(given.predict_labels(data), expected)


def test_layout_errors(files, data):
    free = O.ONNXModel(files["free"])
    with pytest.raises(ModelError, match="ambiguous.*--layout NHWC\\|NCHW"):
        free.labels(data)
    assert np.array_equal(
        O.ONNXModel(files["free"], layout="NHWC").labels(data), O.ONNXModel(files["nhwc"]).labels(data)
    )
    with pytest.raises(ModelError, match=r"\(4, 8, 1\) per example.*neither"):
        O.ONNXModel(files["nhwc"]).labels(np.zeros((2, 4, 8, 1), np.float32))
    with pytest.raises(ModelError, match="NCHW"):
        O.ONNXModel(files["nhwc"], layout="NCHW").labels(data)
    with pytest.raises(ParameterError, match="layout"):
        as_classifier(str(files["nhwc"]), layout="NWHC")


def test_output_kinds(keras_model, files, data, tmp_path):
    m = O.ONNXModel(files["logits"])
    assert m.output_kind == "logits" and as_classifier(m).scores_kind == "logits"

    def softmax_by_hand(x):  # no Softmax node: Exp, ReduceSum, Div
        e = tf.exp(tf.reshape(x, (-1, H * W * C))[:, :CLASSES])
        return e / tf.reduce_sum(e, axis=1, keepdims=True)

    by_hand = O.ONNXModel(_to_onnx(softmax_by_hand, (None,) + SHAPE, tmp_path / "by_hand.onnx"))
    assert by_hand.output_kind == "logits"  # the graph says nothing; the probe in as_classifier does
    assert as_classifier(by_hand).scores_kind == "probabilities"


def test_refused_files(tmp_path, files):
    from onnx import TensorProto, helper

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ModelError, match="junk.onnx is not a readable ONNX model: "):
        O.ONNXModel(junk)
    with pytest.raises(ModelError, match="does not exist"):
        O.ONNXModel(tmp_path / "absent.onnx")
    two = _helper_model(
        tmp_path / "two.onnx",
        [("a", TensorProto.FLOAT, [None, CLASSES]), ("b", TensorProto.FLOAT, [None, CLASSES])],
        [helper.make_node("Add", ["a", "b"], ["y"])],
    )
    with pytest.raises(ModelError, match="has 2 inputs"):
        O.ONNXModel(two)
    u8 = _helper_model(
        tmp_path / "u8.onnx",
        [("x", TensorProto.UINT8, [None, CLASSES])],
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
    )
    with pytest.raises(ModelError, match=r"tensor\(uint8\) inputs"):
        O.ONNXModel(u8)
    with pytest.raises(ParameterError, match="layout"):
        O.ONNXModel(files["nhwc"], layout="nhwc")


def test_double_input_is_fed_as_double(tmp_path):
    from onnx import TensorProto, helper

    path = _helper_model(
        tmp_path / "f64.onnx",
        [("x", TensorProto.DOUBLE, [None, CLASSES])],
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
    )
    m = O.ONNXModel(path)
    assert m.input_dtype == np.float64
    assert m.labels(np.array([[0.1, 0.9, 0.2, 0.3]], np.float32)).tolist() == [1]


def test_missing_onnxruntime_is_named(monkeypatch, files):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(ModelError, match="pip install onnxruntime"):
        O.ONNXModel(files["nhwc"])


def test_onnx_is_not_a_gradient_target(files):
    from ipguard_tf.methods.ipguard import IPGuard

    clf = as_classifier(str(files["nhwc"]))
    assert not clf.has_logits
    with pytest.raises(ModelError, match="not differentiable|logits"):  # the methods' own check, as for TFLite
        IPGuard(k=1.0, max_iter=2, init="R", label="R").generate(clf, 2)


# -- the command line ----------------------------------------------------------------------------------------
def _one_line_error(capsys, code, expect):
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1, err
    assert expect in err[0], err
    assert "Traceback" not in err[0]


@pytest.fixture(scope="module")
def fingerprint(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp") / "fp.npz"
    argv = ["-q", "extract", "--model", str(files["keras"]), "--init", "R", "--label", "R", "--n", "10"]
    argv += ["--max-iter", "20", "--k", "1", "--seed", "0", "--out", str(out)]
    assert main(argv) == 0
    return out


def _verify(fp, *args):
    return main(["-q", "verify", "--fingerprint", str(fp), "--json", *args])


def test_cli_verifies_onnx_copies(files, fingerprint, capsys):
    capsys.readouterr()
    suspects = [files["nhwc"], files["nchw"], files["k2"], files["batch1"]]
    assert _verify(fingerprint, *[a for s in suspects for a in ("--suspect", str(s))]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["matching_rate"] for r in rows] == [1.0] * len(suspects), rows
    assert all(r["verdict"] == 1 for r in rows)
    for layout, which in (("NCHW", "nchw"), ("NHWC", "free")):  # given: NCHW as found, and the ambiguous file
        assert _verify(fingerprint, "--suspect", str(files[which]), "--layout", layout) == 0
        assert json.loads(capsys.readouterr().out)[0]["matching_rate"] == 1.0


def test_cli_errors_are_one_line(files, fingerprint, tmp_path, capsys):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage\xff" * 10)
    wrong = _to_onnx(lambda x: tf.reshape(x, (-1, 36))[:, :CLASSES], (None, 6, 6, 1), tmp_path / "six.onnx")
    capsys.readouterr()
    _one_line_error(capsys, _verify(fingerprint, "--suspect", str(junk)), "junk.onnx is not a readable ONNX model")
    _one_line_error(capsys, _verify(fingerprint, "--suspect", str(wrong)), "takes (unk")
    _one_line_error(capsys, _verify(fingerprint, "--suspect", str(files["free"])), "ambiguous; give --layout")
    _one_line_error(
        capsys,
        _verify(fingerprint, "--suspect", str(files["nhwc"]), "--layout", "NCHW"),
        "as NCHW but target.onnx takes",
    )
    _one_line_error(
        capsys,
        _verify(fingerprint, "--suspect", str(files["keras"]), "--layout", "NCHW"),
        "--layout NCHW applies to .onnx suspects only",
    )
