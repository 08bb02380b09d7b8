"""ImageNet (paper Sections 5.1.1-5.1.2): the Keras Applications ResNet50 target and the eleven
different-architecture suspects, each with its own input size and preprocessing, all giving logits.

Fingerprints live in [0, 1] pixel space at the target's 224x224; each model's adapter resizes (bilinear) to its
own input size (299 or 331 for some), scales to [0, 255] and applies its own ``preprocess_input`` mode (caffe,
tf or torch) inside the differentiable function, as the paper does ("we resize the data points in our
fingerprint to fit the input size of different architectures").

Weights: ``"imagenet"`` (Keras downloads and caches them in ``~/.keras/models/``), a folder holding the
weight files under their Keras names (:data:`WEIGHT_FILES`), or ``None`` (random weights, for tests). Offline
without the file, the error names the missing file and where to put it.

ResNeXt101 (32x4d) is not in Keras Applications; :func:`resnext101` rebuilds the standalone
``keras_applications`` package's definition layer for layer (grouped convolutions as a depthwise convolution
followed by a group sum), so that its weight file ``resnext101_weights_tf_dim_ordering_tf_kernels.h5`` loads.

Memory: activations of these models at batch 100 take several GB (NASNetLarge at 331x331 most); extraction on
ImageNet-size models uses :data:`IMAGENET_BATCH` points at a time by default.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ipguard_tf.core.errors import ModelError, ParameterError
from ipguard_tf.models.classifier import Classifier, as_classifier

log = logging.getLogger(__name__)


#: points searched together on ImageNet-size models (about 1-3 GB of activations for ResNet50 on a CPU)
IMAGENET_BATCH = 10


TARGET = "ResNet50"


KERAS_CACHE = "~/.keras/models"


@dataclass(frozen=True)
class Spec:
    """One Keras Applications model: constructor name, keyword arguments, input side, preprocessing mode."""

    constructor: str
    kwargs: Tuple[Tuple[str, Any], ...]
    size: int
    mode: str  # caffe | tf | torch
    weight_file: str
    params_m: float  # published parameter count (millions, with the 1000-class top)


SPECS: Dict[str, Spec] = {
    "ResNet50": Spec("ResNet50", (), 224, "caffe", "resnet50_weights_tf_dim_ordering_tf_kernels.h5", 25.6),
    "VGG16": Spec("VGG16", (), 224, "caffe", "vgg16_weights_tf_dim_ordering_tf_kernels.h5", 138.4),
    "ResNet152": Spec("ResNet152", (), 224, "caffe", "resnet152_weights_tf_dim_ordering_tf_kernels.h5", 60.4),
    "ResNet152V2": Spec("ResNet152V2", (), 224, "tf", "resnet152v2_weights_tf_dim_ordering_tf_kernels.h5", 60.4),
    "InceptionV3": Spec("InceptionV3", (), 299, "tf", "inception_v3_weights_tf_dim_ordering_tf_kernels.h5", 23.9),
    "InceptionResNetV2": Spec(
        "InceptionResNetV2", (), 299, "tf", "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels.h5", 55.9
    ),
    "Xception": Spec("Xception", (), 299, "tf", "xception_weights_tf_dim_ordering_tf_kernels.h5", 22.9),
    "MobileNet": Spec("MobileNet", (("alpha", 1.0),), 224, "tf", "mobilenet_1_0_224_tf.h5", 4.3),
    "MobileNetV2": Spec(
        "MobileNetV2", (("alpha", 1.4),), 224, "tf", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.4_224.h5", 6.2
    ),
    "DenseNet201": Spec("DenseNet201", (), 224, "torch", "densenet201_weights_tf_dim_ordering_tf_kernels.h5", 20.2),
    "NASNetLarge": Spec("NASNetLarge", (), 331, "tf", "NASNet-large.h5", 88.9),
    "ResNeXt101": Spec("ResNeXt101", (), 224, "torch", "resnext101_weights_tf_dim_ordering_tf_kernels.h5", 44.3),
}


#: the paper's ImageNet negatives (Section 5.1.2): the best pretrained model of each other Keras family
SUSPECTS: List[str] = [n for n in SPECS if n != TARGET]


WEIGHT_FILES = {n: s.weight_file for n, s in SPECS.items()}


# -- ResNeXt101 (keras_applications definition) ----------------------------------------------------------------------
def _group_sum_layer():
    import keras

    @keras.saving.register_keras_serializable(package="ipguard_tf")
    class GroupSum(keras.layers.Layer):
        """Sum over the last axis of a (H, W, groups, c, c) tensor: the grouped-convolution reduction of
        keras_applications' ResNeXt (its ``Lambda(lambda x: sum(x[..., i] for i in range(c)))``)."""

        def call(self, x):
            return keras.ops.sum(x, axis=-1)

    return GroupSum


_GROUP_SUM = None


def _block3(K, x, filters, stride=1, groups=32, conv_shortcut=True, name=None):
    global _GROUP_SUM
    if _GROUP_SUM is None:
        _GROUP_SUM = _group_sum_layer()
    L = K.layers
    if conv_shortcut:
        shortcut = L.Conv2D((64 // groups) * filters, 1, strides=stride, use_bias=False, name=name + "_0_conv")(x)
        shortcut = L.BatchNormalization(axis=3, epsilon=1.001e-5, name=name + "_0_bn")(shortcut)
    else:
        shortcut = x
    x = L.Conv2D(filters, 1, use_bias=False, name=name + "_1_conv")(x)
    x = L.BatchNormalization(axis=3, epsilon=1.001e-5, name=name + "_1_bn")(x)
    x = L.Activation("relu", name=name + "_1_relu")(x)
    c = filters // groups
    x = L.ZeroPadding2D(padding=((1, 1), (1, 1)), name=name + "_2_pad")(x)
    x = L.DepthwiseConv2D(3, strides=stride, depth_multiplier=c, use_bias=False, name=name + "_2_conv")(x)
    hw = tuple(int(d) for d in x.shape[1:-1])
    x = L.Reshape(hw + (groups, c, c), name=name + "_2_reshape")(x)
    x = _GROUP_SUM(name=name + "_2_reduce")(x)
    x = L.Reshape(hw + (filters,), name=name + "_2_reshape2")(x)
    x = L.BatchNormalization(axis=3, epsilon=1.001e-5, name=name + "_2_bn")(x)
    x = L.Activation("relu", name=name + "_2_relu")(x)
    x = L.Conv2D((64 // groups) * filters, 1, use_bias=False, name=name + "_3_conv")(x)
    x = L.BatchNormalization(axis=3, epsilon=1.001e-5, name=name + "_3_bn")(x)
    x = L.Add(name=name + "_add")([shortcut, x])
    return L.Activation("relu", name=name + "_out")(x)


def _stack3(K, x, filters, blocks, stride1=2, groups=32, name=None):
    x = _block3(K, x, filters, stride=stride1, groups=groups, name=name + "_block1")
    for i in range(2, blocks + 1):
        x = _block3(K, x, filters, groups=groups, conv_shortcut=False, name=name + "_block" + str(i))
    return x


def resnext101(weights: Optional[str] = None, classes: int = 1000, classifier_activation: Optional[str] = None):
    """ResNeXt-101 (32x4d) as in keras_applications (``resnext.py``/``resnet_common.py``), 44.3 M parameters.

    ``weights`` is ``None`` or the path of ``resnext101_weights_tf_dim_ordering_tf_kernels.h5``; the final
    Dense layer ``probs`` has ``classifier_activation`` (``None``: logits). Input: 224x224x3, torch-mode
    preprocessing.
    """
    import keras

    L = keras.layers
    inp = keras.Input((224, 224, 3))
    x = L.ZeroPadding2D(padding=((3, 3), (3, 3)), name="conv1_pad")(inp)
    x = L.Conv2D(64, 7, strides=2, use_bias=False, name="conv1_conv")(x)
    x = L.BatchNormalization(axis=3, epsilon=1.001e-5, name="conv1_bn")(x)
    x = L.Activation("relu", name="conv1_relu")(x)
    x = L.ZeroPadding2D(padding=((1, 1), (1, 1)), name="pool1_pad")(x)
    x = L.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    x = _stack3(keras, x, 128, 3, stride1=1, name="conv2")
    x = _stack3(keras, x, 256, 4, name="conv3")
    x = _stack3(keras, x, 512, 23, name="conv4")
    x = _stack3(keras, x, 1024, 3, name="conv5")
    x = L.GlobalAveragePooling2D(name="avg_pool")(x)
    x = L.Dense(classes, activation=classifier_activation, name="probs")(x)
    model = keras.Model(inp, x, name="resnext101")
    if weights is not None:
        model.load_weights(weights)  # Keras 2 HDF5 weight file, loaded layer by layer in order
    return model


# -- weights --------------------------------------------------------------------------------------------------------
def resolve_weights(name: str, weights: Optional[str]) -> Optional[str]:
    """``None`` | ``"imagenet"`` | a folder -> what the constructor takes; a missing file is a one-line error."""
    if weights is None or str(weights).lower() == "none":
        return None
    fname = SPECS[name].weight_file
    if str(weights) == "imagenet":
        cached = Path(os.path.expanduser(KERAS_CACHE)) / fname
        if name == "ResNeXt101":
            if cached.exists():
                return str(cached)
            raise ModelError(
                f"missing weight file {fname}: Keras does not distribute ResNeXt101 weights; put the "
                f"keras_applications file in {KERAS_CACHE}/ or in a folder given as the weights"
            )
        return "imagenet"
    folder = Path(weights)
    path = folder / fname if folder.is_dir() else folder
    if not path.is_file():
        raise ModelError(
            f"missing weight file {fname}: put it in {folder} (or use weights 'imagenet' with "
            f"internet; Keras caches it in {KERAS_CACHE}/)"
        )
    return str(path)


def build_model(name: str, weights: Optional[str] = None):
    """The Keras model ``name`` (one of :data:`SPECS`) with a logits head (``classifier_activation=None``)."""
    import keras

    if name not in SPECS:
        raise ModelError(f"unknown ImageNet model {name!r}; choose one of {', '.join(SPECS)}")
    spec = SPECS[name]
    w = resolve_weights(name, weights)
    if name == "ResNeXt101":
        return resnext101(w)
    ctor = getattr(keras.applications, spec.constructor)
    try:
        return ctor(weights=w, classifier_activation=None, **dict(spec.kwargs))
    except Exception as exc:
        if w == "imagenet":
            raise ModelError(
                f"could not get {spec.weight_file} ({type(exc).__name__}); offline, put the file in "
                f"{KERAS_CACHE}/ or pass a folder holding it as the weights"
            ) from None
        raise


def preprocess_fn(mode: str) -> Callable:
    """Keras' ``imagenet_utils.preprocess_input`` in ``mode`` (caffe, tf, torch), on [0, 255] RGB tensors."""
    from keras.applications import imagenet_utils

    if mode not in ("caffe", "tf", "torch"):
        raise ParameterError(f"mode must be caffe, tf or torch, not {mode!r}")
    return lambda x: imagenet_utils.preprocess_input(x, mode=mode)


def preprocess_kernel(mode: str) -> Tuple[np.ndarray, np.ndarray]:
    """A fixed 1x1 convolution (kernel, bias) equal to ``preprocess_input(255 * x, mode)`` on x in [0, 1]:
    caffe = RGB->BGR and minus the ImageNet mean (0-255 scale), tf = 2x - 1, torch = (x - mean) / std."""
    k = np.zeros((1, 1, 3, 3), np.float32)
    if mode == "caffe":
        for c in range(3):
            k[0, 0, 2 - c, c] = 255.0
        return k, -np.array([103.939, 116.779, 123.68], np.float32)
    if mode == "tf":
        for c in range(3):
            k[0, 0, c, c] = 2.0
        return k, -np.ones(3, np.float32)
    if mode == "torch":
        mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
        for c in range(3):
            k[0, 0, c, c] = 1.0 / std[c]
        return k, -mean / std
    raise ParameterError(f"mode must be caffe, tf or torch, not {mode!r}")


def pixel_model(name: str, weights: Optional[str] = None, K: Any = None):
    """ImageNet model ``name`` as one flat Keras model on 224x224x3 images in [0, 1], giving logits:
    input -> bilinear resize to the model's size (if not 224) -> its preprocessing as a fixed, non-trainable 1x1
    convolution (:func:`preprocess_kernel`) -> the Keras Applications layers. Flat, so the zoo's
    post-processings (last layer, filter pruning, TF-MOT through a Keras 2 twin with ``K=tf_keras``) apply.
    Pretrained weights are loaded into the plain application model and copied layer by layer (by name).
    """
    import keras

    K = K or keras
    if name not in SPECS:
        raise ModelError(f"unknown ImageNet model {name!r}; choose one of {', '.join(SPECS)}")
    spec = SPECS[name]
    w = resolve_weights(name, weights)
    if w is not None and K is not keras:
        raise ModelError("pretrained weights load into the Keras 3 model; make the Keras 2 twin from it")
    inp = K.Input((224, 224, 3), name="pixels")
    x = inp
    if spec.size != 224:
        x = K.layers.Resizing(spec.size, spec.size, interpolation="bilinear", name="pixel_resize")(x)
    pre = K.layers.Conv2D(3, 1, trainable=False, name="pixel_preprocess")
    x = pre(x)
    if name == "ResNeXt101":
        if K is not keras:
            raise ModelError("ResNeXt101 is defined for Keras 3 only")
        base = resnext101(None)
        model = keras.Model(inp, base(x), name="resnext101_pixels")  # nested: its group-sum layer is Keras 3
        target_layers = base.layers
    else:
        ctor = getattr(K.applications, spec.constructor)
        model = ctor(weights=None, input_tensor=x, classifier_activation=None, **dict(spec.kwargs))
        target_layers = model.layers
    pre.set_weights(list(preprocess_kernel(spec.mode)))
    if w is not None:
        copy_application_weights(build_model(name, weights), target_layers)
    return model


def copy_application_weights(src, target_layers) -> None:
    """Copy the weights of application model ``src`` into ``target_layers`` (the same constructor's layers,
    after the pixel front end), pairing layers with weights in order (auto-generated names differ between two
    builds in one session, e.g. InceptionV3's ``conv2d_N``)."""
    dst = [layer for layer in target_layers if layer.weights and not layer.name.startswith("pixel_")]
    srcs = [layer for layer in src.layers if layer.weights]
    if len(dst) != len(srcs):
        raise ModelError(f"cannot copy weights: {len(srcs)} layers with weights vs {len(dst)}")
    for a, b in zip(srcs, dst):
        b.set_weights(a.get_weights())


def as_imagenet_classifier(name: str, weights: Optional[str] = None, model: Any = None) -> Classifier:
    """A :class:`Classifier` on 224x224x3 images in [0, 1] for ImageNet model ``name`` (its :func:`pixel_model`,
    or ``model``, e.g. a post-processed copy of it)."""

    spec = SPECS[name]
    m = model if model is not None else pixel_model(name, weights)
    c = as_classifier(m, name=name)
    c.source = f"imagenet:{name}"
    c.batch_size = 32
    c.note = f"input {spec.size}x{spec.size}, preprocessing {spec.mode}"
    c.model_input_size = spec.size
    c.preprocess_mode = spec.mode
    return c


def parse_model_spec(spec: str) -> Optional[str]:
    """``imagenet:NAME`` -> NAME (for the CLI); anything else -> None."""
    if isinstance(spec, str) and spec.startswith("imagenet:"):
        name = spec.split(":", 1)[1]
        if name not in SPECS:
            raise ModelError(f"unknown ImageNet model {name!r}; choose one of {', '.join(SPECS)}")
        return name
    return None
