"""Architecture factories, each taking the input shape and the number of classes (paper Section 5.1).

Every factory builds a functional model that outputs logits (no softmax) and takes ``K``, the Keras module to
build it with: ``keras`` (Keras 3, the default) or ``tf_keras`` (Keras 2, which TF-MOT's pruning needs). Both
builds have the same layers in the same order, so weights copy across with ``set_weights``
(:func:`twin`).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Sequence

import keras

from ipguard_tf.core.errors import ParameterError
from ipguard_tf.models.imagenet import pixel_model


def _inp(K, input_shape):
    return K.Input(tuple(input_shape), name="image")


def simple_cnn(
    input_shape: Sequence[int] = (28, 28, 1),
    num_classes: int = 10,
    *,
    fc_units: int = 1024,
    dropout: float = 0.5,
    name: str = "simple_cnn",
    K: Any = keras,
):
    """The simple CNN of Chen & Wu's anti-piracy paper (``../shared/papers/004_*``): conv 3x3x32, 2x2 max-pool,
    conv 3x3x64, 2x2 max-pool, fc ``fc_units`` with dropout, fc ``num_classes``.

    ``fc_units=1024`` is that paper's model (3.2 M parameters on 28x28x1, 91.80 % on Fashion-MNIST there).
    """
    L = K.layers
    inp = _inp(K, input_shape)
    x = L.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(inp)
    x = L.MaxPooling2D(2, name="pool1")(x)
    x = L.Conv2D(64, 3, padding="same", activation="relu", name="conv2")(x)
    x = L.MaxPooling2D(2, name="pool2")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(fc_units, activation="relu", name="fc1")(x)
    x = L.Dropout(dropout, name="dropout")(x)
    out = L.Dense(num_classes, name="logits")(x)
    return K.Model(inp, out, name=name)


def fmnist_cnn(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10, K: Any = keras):
    """The Fashion-MNIST target: :func:`simple_cnn` with a 64-unit fully connected layer (220,234 parameters).

    Why this and not ResNet20 (the paper's CIFAR-10 target): one Fashion-MNIST epoch of this CNN takes about
    9-25 s on the project's 2-core CPU against about 4.5 min for ResNet20, so the target, all six families of
    post-processed copies and tens of independent same-architecture models can be trained within the 3-hour
    budget; and at 0.9 MB a model the zoo fits in ``pretrained/``. Why 64 units and not the anti-piracy paper's
    1024: 1024 units make a 3.2 M-parameter (12.9 MB) model, too large to keep tens of copies in the
    repository. Both conv layers have a multiple of 16 filters (32, 64), as filter pruning's c = j/16 needs.
    """
    return simple_cnn(input_shape, num_classes, fc_units=64, dropout=0.5, name="fmnist_cnn", K=K)


def lenet5(input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10, K: Any = keras):
    """LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling, as commonly used on CIFAR: conv 5x5x6, pool,
    conv 5x5x16, pool, fc 120, fc 84, fc classes. On 28x28 inputs the first convolution uses ``same`` padding,
    which is the classic network's 32x32 padded MNIST input (both give 5x5x16 before the first fc layer)."""
    L = K.layers
    inp = _inp(K, input_shape)
    pad = "same" if input_shape[0] < 32 else "valid"
    x = L.Conv2D(6, 5, padding=pad, activation="relu", name="conv1")(inp)
    x = L.MaxPooling2D(2, name="pool1")(x)
    x = L.Conv2D(16, 5, activation="relu", name="conv2")(x)
    x = L.MaxPooling2D(2, name="pool2")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(120, activation="relu", name="fc1")(x)
    x = L.Dense(84, activation="relu", name="fc2")(x)
    out = L.Dense(num_classes, name="logits")(x)
    return K.Model(inp, out, name="lenet5")


_VGG_CFGS = {
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def vgg16(
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    *,
    width: float = 1.0,
    K: Any = keras,
    depth: int = 16,
    name: str = "vgg16",
):
    """VGG16 for 32x32 inputs (Simonyan & Zisserman 2014, CIFAR style): 13 conv 3x3 layers with batch norm and
    ReLU in five blocks, each followed by 2x2 max-pooling, then fc 512, dropout 0.5, fc classes (``depth=13``:
    VGG13, 10 conv layers).

    Adaptation to 28x28: the max-poolings use ``same`` padding, so the five poolings take 28 to 14, 7, 4, 2, 1
    (32x32 inputs are unchanged: 16, 8, 4, 2, 1). ``width`` scales every layer's width (1.0 = VGG16).
    """
    if f"vgg{depth}" not in _VGG_CFGS:
        raise ParameterError(f"VGG depth must be one of 13, 16, got {depth}")
    L = K.layers
    inp = _inp(K, input_shape)
    x = inp
    conv_i, pool_i = 0, 0
    for v in _VGG_CFGS[f"vgg{depth}"]:
        if v == "M":
            pool_i += 1
            x = L.MaxPooling2D(2, padding="same", name=f"pool{pool_i}")(x)
        else:
            conv_i += 1
            x = L.Conv2D(max(1, int(v * width)), 3, padding="same", use_bias=False, name=f"conv{conv_i}")(x)
            x = L.BatchNormalization(name=f"bn{conv_i}")(x)
            x = L.Activation("relu", name=f"relu{conv_i}")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(max(1, int(512 * width)), activation="relu", name="fc1")(x)
    x = L.Dropout(0.5, name="dropout")(x)
    out = L.Dense(num_classes, name="logits")(x)
    return K.Model(inp, out, name=name)


def _resnet_v1_block(K, x, filters, stride, name):
    L = K.layers
    y = L.Conv2D(
        filters, 3, strides=stride, padding="same", use_bias=False, kernel_initializer="he_normal", name=f"{name}_conv1"
    )(x)
    y = L.BatchNormalization(name=f"{name}_bn1")(y)
    y = L.Activation("relu", name=f"{name}_relu1")(y)
    y = L.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal", name=f"{name}_conv2")(
        y
    )  # the block's last conv: left alone by filter pruning
    y = L.BatchNormalization(name=f"{name}_bn2")(y)
    if stride != 1 or x.shape[-1] != filters:
        x = L.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_shortcut")(x)
        x = L.BatchNormalization(name=f"{name}_shortcut_bn")(x)
    y = L.Add(name=f"{name}_add")([x, y])
    return L.Activation("relu", name=f"{name}_out")(y)


def resnet20(input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10, K: Any = keras):
    """ResNet20 for CIFAR (He et al. 2016, Section 4.2): 3x3 conv 16, three stages of three basic blocks with
    16/32/64 filters, global average pooling, fc classes (0.27 M parameters). Shortcuts that change shape are
    1x1 convolutions (option B). Residual blocks' second convs are named ``*_conv2`` (see filter pruning)."""
    L = K.layers
    inp = _inp(K, input_shape)
    x = L.Conv2D(16, 3, padding="same", use_bias=False, kernel_initializer="he_normal", name="stem_conv")(inp)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.Activation("relu", name="stem_relu")(x)
    for s, filters in enumerate((16, 32, 64)):
        for b in range(3):
            x = _resnet_v1_block(K, x, filters, 2 if (s > 0 and b == 0) else 1, f"s{s + 1}b{b + 1}")
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(num_classes, name="logits")(x)
    return K.Model(inp, out, name="resnet20")


def _wrn_block(K, x, filters, stride, dropout, name):
    L = K.layers
    o = L.BatchNormalization(name=f"{name}_bn1")(x)
    o = L.Activation("relu", name=f"{name}_relu1")(o)
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = L.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_shortcut")(o)
    y = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(o)
    y = L.BatchNormalization(name=f"{name}_bn2")(y)
    y = L.Activation("relu", name=f"{name}_relu2")(y)
    if dropout:
        y = L.Dropout(dropout, name=f"{name}_dropout")(y)
    y = L.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    return L.Add(name=f"{name}_add")([shortcut, y])


def wrn(
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 100,
    *,
    depth: int = 22,
    widen: int = 4,
    dropout: float = 0.0,
    K: Any = keras,
):
    """Wide ResNet WRN-depth-widen (Zagoruyko & Komodakis 2016), pre-activation blocks; WRN-22-4 is the paper's
    CIFAR-100 target ((22 - 4) / 6 = 3 blocks per stage, widths 64/128/256, 4.3 M parameters)."""
    if (depth - 4) % 6:
        raise ParameterError(f"depth must be 6n + 4, got {depth}")
    n = (depth - 4) // 6
    L = K.layers
    inp = _inp(K, input_shape)
    x = L.Conv2D(16, 3, padding="same", use_bias=False, name="stem_conv")(inp)
    for s, filters in enumerate((16 * widen, 32 * widen, 64 * widen)):
        for b in range(n):
            x = _wrn_block(K, x, filters, 2 if (s > 0 and b == 0) else 1, dropout, f"s{s + 1}b{b + 1}")
    x = L.BatchNormalization(name="final_bn")(x)
    x = L.Activation("relu", name="final_relu")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(num_classes, name="logits")(x)
    return K.Model(inp, out, name=f"wrn{depth}_{widen}")


def wrn22_4(input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 100, K: Any = keras):
    """WRN-22-4, the paper's CIFAR-100 target."""
    return wrn(input_shape, num_classes, depth=22, widen=4, K=K)


def _w(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def resnet18(
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    *,
    width: float = 1.0,
    name: str = "resnet18",
    K: Any = keras,
):
    """ResNet18 (He et al. 2016) in its CIFAR form: 3x3 stem conv (no max-pool), four stages of two basic
    blocks with 64/128/256/512 filters (times ``width``), strides 1, 2, 2, 2, global average pooling, fc."""
    L = K.layers
    inp = _inp(K, input_shape)
    x = L.Conv2D(_w(64, width), 3, padding="same", use_bias=False, kernel_initializer="he_normal", name="stem_conv")(
        inp
    )
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.Activation("relu", name="stem_relu")(x)
    for s, filters in enumerate((64, 128, 256, 512)):
        for b in range(2):
            x = _resnet_v1_block(K, x, _w(filters, width), 2 if (s > 0 and b == 0) else 1, f"s{s + 1}b{b + 1}")
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(num_classes, name="logits")(x)
    return K.Model(inp, out, name=name)


def mobilenet_v2(
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    *,
    width: float = 1.0,
    name: str = "mobilenet_v2",
    K: Any = keras,
    bn_momentum: float = 0.99,
):
    """MobileNetV2 (Sandler et al. 2018) for small inputs: the paper's seven bottleneck stages (expansion 6,
    channels 16/24/32/64/96/160/320 times ``width``, 1/2/3/4/3/3/1 blocks) with the CIFAR adaptation of
    stride 1 in the stem and the second stage (28x28 -> 14, 7, 4 through strides 2 at stages 3, 4 and 6), a
    1x1 conv to 1280 x ``width`` channels, global average pooling, fc. ``bn_momentum``: the batch norms'
    moving-average momentum (Keras' default 0.99; PyTorch's default, momentum 0.1, is Keras' 0.9)."""
    L = K.layers

    def bn(name: str):
        return L.BatchNormalization(momentum=bn_momentum, name=name)

    inp = _inp(K, input_shape)
    x = L.Conv2D(_w(32, width), 3, padding="same", use_bias=False, name="stem_conv")(inp)
    x = bn("stem_bn")(x)
    x = L.ReLU(6.0, name="stem_relu")(x)
    stages = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
    for s, (t, c, n, stride) in enumerate(stages):
        out_c = _w(c, width)
        for b in range(n):
            pre = f"s{s + 1}b{b + 1}"
            in_c = x.shape[-1]
            y = x
            if t != 1:
                y = L.Conv2D(in_c * t, 1, use_bias=False, name=f"{pre}_expand")(y)
                y = bn(f"{pre}_expand_bn")(y)
                y = L.ReLU(6.0, name=f"{pre}_expand_relu")(y)
            y = L.DepthwiseConv2D(3, strides=stride if b == 0 else 1, padding="same", use_bias=False, name=f"{pre}_dw")(
                y
            )
            y = bn(f"{pre}_dw_bn")(y)
            y = L.ReLU(6.0, name=f"{pre}_dw_relu")(y)
            y = L.Conv2D(out_c, 1, use_bias=False, name=f"{pre}_project")(y)
            y = bn(f"{pre}_project_bn")(y)
            x = L.Add(name=f"{pre}_add")([x, y]) if (b > 0 or stride == 1) and in_c == out_c else y
    x = L.Conv2D(_w(1280, width), 1, use_bias=False, name="head_conv")(x)
    x = bn("head_bn")(x)
    x = L.ReLU(6.0, name="head_relu")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(num_classes, name="logits")(x)
    return K.Model(inp, out, name=name)


def densenet(
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    *,
    blocks: Sequence[int] = (6, 12, 24, 16),
    growth: int = 32,
    name: str = "densenet121",
    K: Any = keras,
):
    """DenseNet-BC (Huang et al. 2017): dense blocks of BN-ReLU-conv1x1(4k)-BN-ReLU-conv3x3(k) layers
    (``blocks`` layers each; (6, 12, 24, 16) with k = 32 is DenseNet121), transitions with compression 0.5
    and 2x2 average pooling, a 3x3 stem conv of 2k channels for small inputs (no stride or max-pool)."""
    L = K.layers
    inp = _inp(K, input_shape)
    x = L.Conv2D(2 * growth, 3, padding="same", use_bias=False, name="stem_conv")(inp)
    for bi, n in enumerate(blocks):
        for li in range(n):
            pre = f"d{bi + 1}l{li + 1}"
            y = L.BatchNormalization(name=f"{pre}_bn1")(x)
            y = L.Activation("relu", name=f"{pre}_relu1")(y)
            y = L.Conv2D(4 * growth, 1, use_bias=False, name=f"{pre}_conv1")(y)
            y = L.BatchNormalization(name=f"{pre}_bn2")(y)
            y = L.Activation("relu", name=f"{pre}_relu2")(y)
            y = L.Conv2D(growth, 3, padding="same", use_bias=False, name=f"{pre}_conv2")(y)
            x = L.Concatenate(name=f"{pre}_concat")([x, y])
        if bi < len(blocks) - 1:
            x = L.BatchNormalization(name=f"t{bi + 1}_bn")(x)
            x = L.Activation("relu", name=f"t{bi + 1}_relu")(x)
            x = L.Conv2D(int(x.shape[-1]) // 2, 1, use_bias=False, name=f"t{bi + 1}_conv")(x)
            x = L.AveragePooling2D(2, padding="same", name=f"t{bi + 1}_pool")(x)
    x = L.BatchNormalization(name="final_bn")(x)
    x = L.Activation("relu", name="final_relu")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(num_classes, name="logits")(x)
    return K.Model(inp, out, name=name)


#: The SAC Fashion-MNIST zoo's families (issue 14), width-reduced to train on a 2-core CPU: SAC's source is a
#: VGG16 with batch norm and its students VGG13, ResNet18, DenseNet121 and MobileNetV2 (torchvision, full
#: width). Here: the same depths and block structure with 1/8 of the channels (VGG16 237 k parameters, about
#: 25 s per epoch of 30,000 images on the project's 2-core machine; VGG13 29 s, ResNet18 51 s, MobileNetV2 51 s),
#: and a DenseNet-BC with growth 8 and blocks (2, 4, 6, 4) (131 s; DenseNet121's (6, 12, 24, 16) at growth 32 is
#: far beyond this machine for tens of models). Widths were chosen from these timings, before any fingerprint
#: was computed on the zoo. The timings were taken by the procedure of experiments/time_sac_architectures.py
#: (run then as a scratch script; its results folder is not committed yet, so treat them as estimates).
#: MobileNetV2's batch norms use PyTorch's default momentum (Keras 0.9), as SAC's torchvision students do: with
#: Keras' 0.99 its 10-epoch students' moving statistics lagged the weights (the first build's Extract-L student:
#: test accuracy 0.759, 14 points below the source; in one-off checks, not a committed command, 0.880 with batch
#: statistics and 0.875 after re-estimating them at 0.9).
#: The other families keep Keras' 0.99, with which they were built (students within 2.5 points of the source).
SAC_ARCHITECTURES: Dict[str, Callable[..., Any]] = {
    "sac_vgg16": lambda input_shape=(28, 28, 1), num_classes=10, K=keras: vgg16(
        input_shape, num_classes, width=0.125, depth=16, name="sac_vgg16", K=K
    ),
    "sac_vgg13": lambda input_shape=(28, 28, 1), num_classes=10, K=keras: vgg16(
        input_shape, num_classes, width=0.125, depth=13, name="sac_vgg13", K=K
    ),
    "sac_resnet18": lambda input_shape=(28, 28, 1), num_classes=10, K=keras: resnet18(
        input_shape, num_classes, width=0.125, name="sac_resnet18", K=K
    ),
    "sac_mobilenet_v2": lambda input_shape=(28, 28, 1), num_classes=10, K=keras: mobilenet_v2(
        input_shape, num_classes, width=0.125, name="sac_mobilenet_v2", K=K, bn_momentum=0.9
    ),
    "sac_densenet": lambda input_shape=(28, 28, 1), num_classes=10, K=keras: densenet(
        input_shape, num_classes, blocks=(2, 4, 6, 4), growth=8, name="sac_densenet", K=K
    ),
}


ARCHITECTURES: Dict[str, Callable[..., Any]] = {
    "fmnist_cnn": fmnist_cnn,
    "simple_cnn": simple_cnn,
    "lenet5": lenet5,
    "vgg16": vgg16,
    # VGG16 at 1/8 width: the Fashion-MNIST zoo's VGG16 negatives (see zoo.train.RECIPES)
    "vgg16_w8": lambda input_shape=(32, 32, 3), num_classes=10, K=keras: vgg16(
        input_shape, num_classes, width=0.125, depth=16, name="vgg16_w8", K=K
    ),
    "resnet20": resnet20,
    "wrn22_4": wrn22_4,
    **SAC_ARCHITECTURES,
}


def build_architecture(name: str, input_shape: Sequence[int], num_classes: int, K: Any = keras):
    """Build an architecture by name with Keras 3 (``K=keras``) or Keras 2 (``K=tf_keras``); ``imagenet:NAME``
    is the ImageNet pixel model of Keras Applications' NAME (random weights)."""
    if name.startswith("imagenet:"):
        return pixel_model(name.split(":", 1)[1], None, K=K)
    if name not in ARCHITECTURES:
        raise ParameterError(f"architecture must be one of {', '.join(sorted(ARCHITECTURES))}, got {name!r}")
    return ARCHITECTURES[name](input_shape, num_classes, K=K)


def twin(model: Any, architecture: str, input_shape: Sequence[int], num_classes: int, K: Any):
    """The same architecture built with Keras module ``K``, holding a copy of ``model``'s weights."""
    other = build_architecture(architecture, input_shape, num_classes, K=K)
    other.set_weights(model.get_weights())
    return other
