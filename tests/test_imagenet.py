"""ImageNet: the twelve Keras models with weights=None (slow: builds about 560 M parameters)."""

import gc

import numpy as np
import pytest

from ipguard_tf import IPGuard, verify
from ipguard_tf.core.errors import ModelError
from ipguard_tf.models.imagenet import SPECS, SUSPECTS, TARGET, as_imagenet_classifier, resnext101, resolve_weights

EXPECTED = {  # input side and preprocessing mode of each Keras Applications model
    "ResNet50": (224, "caffe"),
    "VGG16": (224, "caffe"),
    "ResNet152": (224, "caffe"),
    "ResNet152V2": (224, "tf"),
    "InceptionV3": (299, "tf"),
    "InceptionResNetV2": (299, "tf"),
    "Xception": (299, "tf"),
    "MobileNet": (224, "tf"),
    "MobileNetV2": (224, "tf"),
    "DenseNet201": (224, "torch"),
    "NASNetLarge": (331, "tf"),
    "ResNeXt101": (224, "torch"),
}


def test_resnext101_parameter_count():
    # ResNeXt-101 32x4d: 44.3 M parameters (keras_applications / Xie et al. 2017: ~44.2 M); within 1 %
    n = resnext101(None).count_params()
    assert abs(n - 44.2e6) / 44.2e6 < 0.01


def test_missing_weight_file_names_it(tmp_path):
    with pytest.raises(ModelError, match="vgg16_weights_tf_dim_ordering_tf_kernels.h5"):
        resolve_weights("VGG16", str(tmp_path))
    with pytest.raises(ModelError, match="resnext101_weights_tf_dim_ordering_tf_kernels.h5"):
        resolve_weights("ResNeXt101", str(tmp_path))


def test_cli_missing_weights_one_line(tmp_path, capsys):
    from ipguard_tf.cli import main

    code = main(
        [
            "-q",
            "extract",
            "--model",
            "imagenet:ResNet50",
            "--weights",
            str(tmp_path),
            "--dataset",
            "imagenet",
            "--init",
            "R",
            "--n",
            "1",
            "--out",
            str(tmp_path / "f.npz"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "resnet50_weights_tf_dim_ordering_tf_kernels.h5" in err[0]


@pytest.mark.slow
def test_twelve_models_fingerprint_and_verify():
    assert set(SPECS) == set(EXPECTED) and len(SUSPECTS) == 11 and TARGET not in SUSPECTS
    target = as_imagenet_classifier(TARGET, None)
    fp = IPGuard(k=0.1, max_iter=3, init="R", label="L", seed=0, batch_size=2).generate(target, 2)
    assert fp.x.shape == (2, 224, 224, 3) and fp.metadata["params"]["learning_rate"] == 0.1
    assert verify(fp, target).matching_rate == 1.0
    for name in [TARGET] + SUSPECTS:
        clf = target if name == TARGET else as_imagenet_classifier(name, None)
        size, mode = EXPECTED[name]
        assert clf.keras_model.input_shape[1:3] == (224, 224), name  # fingerprints at 224x224 in [0, 1]
        assert clf.model_input_size == size and clf.preprocess_mode == mode, name
        if size != 224:
            assert clf.keras_model.get_layer("pixel_resize").get_config()["height"] == size
        z = clf.predict_logits(fp.x)
        assert z.shape == (2, 1000) and np.all(np.isfinite(z)), name
        v = verify(fp, clf)
        assert 0.0 <= v.matching_rate <= 1.0
        del clf
        gc.collect()


@pytest.mark.parametrize("name", ["ResNet50", "InceptionV3", "DenseNet201"])
def test_pixel_model_equals_keras_preprocessing(name):
    """The pixel model = resize + Keras' preprocess_input + the application, checked in two exact pieces (a
    random-weight network amplifies float rounding too much for an end-to-end tolerance)."""
    import keras
    import tensorflow as tf

    from ipguard_tf.models.imagenet import build_model, copy_application_weights, pixel_model, preprocess_fn

    pm = pixel_model(name, None)
    base = build_model(name, None)
    copy_application_weights(base, pm.layers)  # base's weights into the pixel model
    x = np.random.default_rng(0).random((2, 224, 224, 3), dtype=np.float32)
    size = SPECS[name].size
    front = keras.Model(pm.input, pm.get_layer("pixel_preprocess").output)
    want = preprocess_fn(SPECS[name].mode)(tf.image.resize(x, (size, size)) * 255.0).numpy()
    np.testing.assert_allclose(front(x, training=False).numpy(), want, atol=1e-4)
    back = keras.Model(pm.get_layer("pixel_preprocess").output, pm.output)
    np.testing.assert_array_equal(back(want, training=False).numpy(), base(want, training=False).numpy())
