"""The ImageNet zoo path end to end (slow: seven ResNet50 post-processings and the eleven other Keras
Applications models, all with random weights); in its own file so that it runs beside the other ImageNet tests
when the suite runs on two workers."""

import numpy as np
import pytest


@pytest.mark.slow
def test_imagenet_zoo_smoke(tmp_path):
    """The ImageNet zoo path end to end on a fake 2-class ImageNet folder and random weights: the target, FTLL,
    FTAL, RTLL, RTAL, WP and FP through the zoo's functions (streamed tf.data training), the eleven pretrained
    negatives, and a sweep point over them."""
    import keras

    from ipguard_tf.evaluation.sweep import Sweep, load_zoo_suspects
    from ipguard_tf.io.data import load_dataset
    from ipguard_tf.zoo import builder as B
    from ipguard_tf.zoo.members import load_member
    from ipguard_tf.zoo.postprocess import eligible_conv_layers

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("n01440764", "n01443537"):
            d = tmp_path / "imagenet" / split / cls
            d.mkdir(parents=True)
            for i in range(3):
                keras.utils.save_img(str(d / f"{i}.png"), rng.integers(0, 255, (64, 64, 3)).astype("uint8"))
    ds = load_dataset("imagenet", str(tmp_path / "imagenet"))
    assert ds.num_train == 6 and ds.x_test.shape == (6, 224, 224, 3)
    prof = B.Profile("smoke", same_arch=0, lenet5=0, vgg16=0, forests=0, max_wp=0.1, max_fp_sixteenths=1)
    out = tmp_path / "zoo"
    m = B.ZooBuilder("imagenet", out, prof, dataset=ds, weights=None, verbose=0).build()
    names = {r["name"] for r in m["models"]}
    assert {"target", "ftll", "ftal", "rtll", "rtal", "wp_p0.1", "fp_c01of16"} <= names
    assert sum(r["role"] == "negative" for r in m["models"]) == 11
    wp = next(r for r in m["models"] if r["name"] == "wp_p0.1")
    assert abs(wp["measured_sparsity"] - 0.1) <= 0.01
    fp_rec = next(r for r in m["models"] if r["name"] == "fp_c01of16")
    assert all(abs(f - 1 / 16) < 0.01 for f in fp_rec["pruned_filter_fractions"].values())
    target = load_member(out, "target")
    eligible = eligible_conv_layers(target)
    assert "pixel_preprocess" not in eligible
    assert not any(n.endswith("_3_conv") or n.endswith("_0_conv") for n in eligible)  # residual ends left alone
    suspects = load_zoo_suspects(out, names=["ftll", "pretrained_VGG16", "pretrained_NASNetLarge"])
    r = Sweep(
        tmp_path / "sweep",
        target,
        ds.sample_train(2),
        suspects,
        n=2,
        progress=False,
        method_params={"ipguard": {"max_iter": 3, "batch_size": 2}},
    ).run("ipguard", "TL", 1.0)
    assert set(r["rates"]) == {"ftll", "pretrained_VGG16", "pretrained_NASNetLarge"}
