"""Stealing attacks and the oracle (issue 14): queries counted, the victim only reached through labels or
probabilities, inputs never modified, each attack does what it says on tiny models."""

import numpy as np
import pytest
from conftest import CLASSES, SHAPE, make_tiny_keras3

from ipguard_tf.core.errors import ParameterError
from ipguard_tf.models.oracle import Oracle, OracleError, softmax
from ipguard_tf.zoo import stealing as S


@pytest.fixture(scope="module")
def victim():
    return make_tiny_keras3(0)


@pytest.fixture(scope="module")
def attack_x():
    return np.random.default_rng(11).random((256,) + SHAPE, dtype=np.float32)


def _weights(m):
    return [w.copy() for w in m.get_weights()]


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def _agreement(a, b, x):
    return float(np.mean(np.argmax(a.predict(x, verbose=0), 1) == np.argmax(b.predict(x, verbose=0), 1)))


def test_oracle_counts_queries_and_keeps_its_budget(victim, attack_x):
    o = Oracle(victim, output="probabilities", query_budget=300, batch_size=50)
    p = o.probabilities(attack_x[:100])
    np.testing.assert_allclose(p, softmax(victim.predict(attack_x[:100], verbose=0)), atol=1e-5)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(o.labels(attack_x[:100]), np.argmax(p, axis=1))
    assert o.queries == 200
    with pytest.raises(OracleError, match="budget of 300"):
        o.labels(attack_x[:150])
    labels_only = Oracle(victim, output="labels")
    with pytest.raises(OracleError, match="labels only"):
        labels_only.probabilities(attack_x[:2])
    with pytest.raises(ParameterError):
        Oracle(victim, output="logits")


def test_oracle_over_a_tflite_victim_with_softmax_output(attack_x):
    from ipguard_tf.models import tflite

    m = make_tiny_keras3(4, softmax=True)
    o = Oracle(tflite.TFLiteModel(tflite.convert(m, "float32")), output="probabilities")
    np.testing.assert_allclose(o.probabilities(attack_x[:20]), m.predict(attack_x[:20], verbose=0), atol=1e-5)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_is_torchs_momentum_with_coupled_weight_decay(nesterov):
    """torch.optim.SGD: g += wd w; buf = m buf + g; w -= lr buf (Nesterov: w -= lr (g + m buf))."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((3,))
    model = keras.Model(inp, keras.layers.Dense(1, use_bias=False)(inp))
    w0 = model.get_weights()[0].copy()
    x = np.ones((1, 3), np.float32)

    def loss(m, xb, tb):  # d/dw of 0.5 * (w.x)^2 = (w.x) x
        return 0.5 * keras.ops.sum(m(xb, training=True) ** 2)

    r = S.SGDRecipe(0.1, epochs=3, momentum=0.5, weight_decay=0.01, batch_size=1, nesterov=nesterov)
    S.sgd_train(model, x, np.zeros((1,), np.float32), loss, r, seed=0, progress=False)
    w, buf = w0.copy(), np.zeros_like(w0)
    for _ in range(3):
        g = float(w[:, 0] @ x[0]) * x[0][:, None] + 0.01 * w
        buf = 0.5 * buf + g
        w = w - 0.1 * ((g + 0.5 * buf) if nesterov else buf)
    np.testing.assert_allclose(model.get_weights()[0], w, rtol=1e-5)


def test_step_schedule_decays_at_its_milestones():
    r = S.SGDRecipe(0.1, epochs=200, schedule="step", milestones=(60, 120, 160), gamma=0.2)
    lrs = [r.learning_rate_at(0, 1, e) for e in (0, 59, 60, 119, 120, 160, 199)]
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.02, 0.02, 0.004, 0.0008, 0.0008])
    c = S.SGDRecipe(0.1, epochs=2, schedule="cosine")
    assert c.learning_rate_at(0, 10, 0) == 0.1 and c.learning_rate_at(5, 10, 1) == pytest.approx(0.05)
    # records of recipes written before the step schedule existed keep their keys
    assert set(S.SGDRecipe(0.05, epochs=3).as_dict()) == {
        "learning_rate",
        "epochs",
        "momentum",
        "weight_decay",
        "batch_size",
        "schedule",
    }


def test_training_recipes_validate_and_keep_adam_records_unchanged():
    from ipguard_tf.zoo.train import RECIPES, Recipe

    assert set(RECIPES[("fashion_mnist", "fmnist_cnn")].as_dict()) == {
        "architecture",
        "epochs",
        "batch_size",
        "learning_rate",
        "optimizer",
        "augmentation",
    }
    wrn = RECIPES[("cifar100", "wrn22_4")]
    assert wrn.sgd().nesterov and wrn.sgd().milestones == (60, 120, 160) and wrn.sgd().gamma == 0.2
    res = RECIPES[("cifar10", "resnet20")].sgd()
    assert res.learning_rate_at(0, 1, 91) == pytest.approx(0.01) and res.weight_decay == 1e-4
    assert Recipe(**RECIPES[("cifar10", "vgg16")].as_dict()) == RECIPES[("cifar10", "vgg16")]  # record round trip
    for bad in (
        dict(optimizer="rmsprop"),
        dict(augmentation="cutout"),
        dict(weight_decay=1e-4),
        dict(optimizer="sgd", schedule="step"),
        dict(optimizer="sgd", nesterov=True, momentum=0.0),
    ):
        with pytest.raises(ParameterError):
            Recipe("lenet5", epochs=1, **bad)


def test_recipe_checks():
    for bad in (
        dict(learning_rate=0, epochs=1),
        dict(learning_rate=0.1, epochs=0),
        dict(learning_rate=0.1, epochs=1, momentum=1.0),
        dict(learning_rate=0.1, epochs=1, schedule="step"),
        dict(learning_rate=0.1, epochs=1, schedule="step", milestones=(5, 3)),
        dict(learning_rate=0.1, epochs=1, schedule="step", milestones=(3,), gamma=1.5),
        dict(learning_rate=0.1, epochs=1, batch_size=0),
    ):
        with pytest.raises(ParameterError):
            S.SGDRecipe(**bad)


def test_pgd_stays_in_the_ball_and_raises_the_loss(victim, attack_x):
    import tensorflow as tf

    x = tf.constant(attack_x[:32])
    y = tf.constant(np.argmax(victim.predict(attack_x[:32], verbose=0), 1))
    adv = S.pgd(victim, x, y).numpy()
    assert np.all(np.abs(adv - attack_x[:32]) <= S.PGD_EPSILON + 1e-6)
    assert adv.min() >= 0 and adv.max() <= 1
    assert float(S._ce(y, victim(adv))) > float(S._ce(y, victim(x)))


def test_extract_labels_learns_the_victim_through_its_labels(victim, attack_x):
    before = _weights(victim)
    o = Oracle(victim)
    recipe = S.SGDRecipe(0.05, epochs=30, batch_size=64, schedule="cosine")
    student, info = S.extract_labels(o, attack_x, lambda: make_tiny_keras3(9), recipe=recipe, progress=False)
    assert info["queries"] == len(attack_x) == o.queries  # asked once, reused every epoch
    test_x = np.random.default_rng(99).random((200,) + SHAPE, dtype=np.float32)
    untrained = make_tiny_keras3(9)
    assert _agreement(student, victim, test_x) > _agreement(untrained, victim, test_x) + 0.2
    assert _same(before, victim.get_weights())
    again, _ = S.extract_labels(Oracle(victim), attack_x, lambda: make_tiny_keras3(9), recipe=recipe, progress=False)
    assert _same(again.get_weights(), student.get_weights())  # seeded: the same student again


def test_crop_flip_stays_in_the_domain_and_pads_with_zeros_or_reflections():
    from ipguard_tf.zoo.train import AUGMENTATIONS, augmentation, crop_flip

    ones = np.ones((200,) + SHAPE, np.float32)
    zero_padded = AUGMENTATIONS["crop4zero+flip"](ones, np.random.default_rng(0))
    assert zero_padded.shape == ones.shape and set(np.unique(zero_padded)) <= {0.0, 1.0}
    # a crop off the centre shows 1 to 4 rows or columns of padding: all but about 1/81 of the images
    assert np.mean(zero_padded.min(axis=(1, 2, 3)) == 0.0) > 0.9
    assert np.array_equal(crop_flip(ones, np.random.default_rng(0)), ones)  # reflection: no new values
    x = np.random.default_rng(1).random((50,) + SHAPE, dtype=np.float32)
    out = augmentation("crop4zero+flip")(x, np.random.default_rng(2))
    assert 0.0 <= out.min() and out.max() <= 1.0 and not np.array_equal(out, x)
    assert np.array_equal(out, augmentation("crop4zero+flip")(x, np.random.default_rng(2)))  # seeded
    assert augmentation("none") is None and augmentation(None) is None
    with pytest.raises(ParameterError, match="augmentation must be one of"):
        augmentation("mixup")


def test_sgd_train_takes_targets_or_a_targets_fn_of_the_augmented_batch(attack_x):
    from ipguard_tf.zoo.train import AUGMENTATIONS, _ce_loss, sgd_train

    model, recipe = make_tiny_keras3(3), S.SGDRecipe(0.01, epochs=2, batch_size=64)
    y = np.zeros(len(attack_x), np.int64)
    for targets, fn in ((y, lambda xb: y[: len(xb)]), (None, None)):
        with pytest.raises(ParameterError, match="either targets or targets_fn"):
            sgd_train(model, attack_x, targets, _ce_loss, recipe, seed=0, progress=False, targets_fn=fn)
    asked = []

    def labels_of(xb):
        asked.append(xb.copy())
        return np.zeros(len(xb), np.int64)

    aug = AUGMENTATIONS["crop4zero+flip"]
    sgd_train(model, attack_x, None, _ce_loss, recipe, seed=0, progress=False, augment=aug, targets_fn=labels_of)
    assert sum(len(b) for b in asked) == 2 * len(attack_x)  # every example of every epoch
    rows = {r.tobytes() for r in attack_x}
    unseen = np.mean([r.tobytes() not in rows for b in asked for r in b])
    assert unseen > 0.9  # asked about the augmented images, not the stored ones


def test_an_augmenting_thief_asks_the_victim_about_every_batch_of_every_epoch(victim, attack_x):
    recipe = S.SGDRecipe(0.05, epochs=3, batch_size=64, schedule="cosine")
    o = Oracle(victim)
    student, info = S.extract_labels(
        o, attack_x, lambda: make_tiny_keras3(9), recipe=recipe, augment="crop4zero+flip", progress=False
    )
    assert info["queries"] == o.queries == 3 * len(attack_x) and info["augment"] == "crop4zero+flip"
    p = Oracle(victim, output="probabilities")
    _, info = S.extract_probabilities(
        p, attack_x, lambda: make_tiny_keras3(9), recipe=recipe, augment="crop4zero+flip", progress=False
    )
    assert info["queries"] == 3 * len(attack_x)
    adv = S.SGDRecipe(1e-2, epochs=2, momentum=0, weight_decay=0, batch_size=32)
    _, info = S.extract_adversarial(
        Oracle(victim), attack_x[:64], student, recipe=adv, steps=2, augment="crop4zero+flip", progress=False
    )
    assert info["queries"] == 2 * 64  # the victim labels each augmented batch; no labels reused
    with pytest.raises(ParameterError, match="augmentation must be one of"):
        S.extract_labels(Oracle(victim), attack_x, lambda: make_tiny_keras3(9), augment="cutout", progress=False)


def test_extract_probabilities_needs_probabilities_and_distils(victim, attack_x):
    with pytest.raises(OracleError, match="labels only"):
        S.extract_probabilities(Oracle(victim), attack_x, lambda: make_tiny_keras3(9), progress=False)
    o = Oracle(victim, output="probabilities")
    recipe = S.SGDRecipe(0.1, epochs=30, batch_size=64, schedule="cosine")
    student, info = S.extract_probabilities(o, attack_x, lambda: make_tiny_keras3(9), recipe=recipe, progress=False)
    assert info["queries"] == len(attack_x) and info["temperature"] == S.EXTRACT_P_TEMPERATURE
    test_x = np.random.default_rng(98).random((200,) + SHAPE, dtype=np.float32)
    assert _agreement(student, victim, test_x) > _agreement(make_tiny_keras3(9), victim, test_x) + 0.2


def test_extract_adversarial_copies_the_student(victim, attack_x):
    student = make_tiny_keras3(5)
    before = _weights(student)
    o = Oracle(victim)
    labels = o.labels(attack_x)
    new, info = S.extract_adversarial(
        o,
        attack_x[:64],
        student,
        labels=labels[:64],
        recipe=S.SGDRecipe(1e-2, epochs=1, momentum=0, weight_decay=0, batch_size=32),
        steps=3,
        progress=False,
    )
    assert info["queries"] == 0  # the thief kept Extract-L's labels
    assert _same(before, student.get_weights()) and not _same(before, new.get_weights())


def test_finetune_last_only_changes_only_the_head(victim, attack_x):
    y = np.random.default_rng(0).integers(0, CLASSES, len(attack_x))
    before = _weights(victim)
    r = S.SGDRecipe(0.05, epochs=1, batch_size=64)
    last = S.finetune(victim, attack_x, y, last_only=True, recipe=r, progress=False)
    assert [type(l).__name__ for l in S.head_layers(victim)] == ["Dense", "Dense"]  # all after the conv
    head = {l.name for l in S.head_layers(victim)}
    for layer, src in zip(last.layers, victim.layers):
        changed = not _same(layer.get_weights(), src.get_weights())
        assert changed == (src.name in head and bool(src.weights)), layer.name
        assert layer.trainable == src.trainable
    everything = S.finetune(victim, attack_x, y, recipe=r, progress=False)
    assert all(
        not _same(a.get_weights(), b.get_weights()) for a, b in zip(everything.layers, victim.layers) if a.weights
    )
    assert _same(before, victim.get_weights())


def test_transfer_gets_a_new_head(victim, attack_x):
    y = np.random.default_rng(1).integers(0, 2, len(attack_x))
    r = S.SGDRecipe(0.05, epochs=1, batch_size=64)
    t = S.transfer(victim, attack_x, y, 2, last_only=True, recipe=r, progress=False)
    assert t.outputs[0].shape[-1] == 2
    for layer, src in zip(t.layers[:-1], victim.layers[:-1]):
        assert _same(layer.get_weights(), src.get_weights())
    with pytest.raises(ParameterError):
        S.transfer(victim, attack_x, y, 1)


def test_adversarial_finetune_leaves_the_source(victim, attack_x):
    y = np.argmax(victim.predict(attack_x, verbose=0), 1)
    before = _weights(victim)
    new = S.adversarial_finetune(
        victim, attack_x[:64], y[:64], steps=2, recipe=S.SGDRecipe(0.01, epochs=1, batch_size=32), progress=False
    )
    assert _same(before, victim.get_weights()) and not _same(before, new.get_weights())


def test_fine_pruning_snapshots_reach_their_fractions(victim, attack_x):
    y = np.argmax(victim.predict(attack_x, verbose=0), 1)
    before = _weights(victim)
    snaps = S.fine_prune(
        victim,
        attack_x,
        y,
        max_fraction=0.75,
        snapshots=4,
        refresh=1,
        finetune_every=1,
        finetune_examples=64,
        batch_size=32,
        progress=False,
    )
    fractions = [f for f, _ in snaps]
    assert fractions == [0.25, 0.5, 0.75]  # the conv layer has 4 channels: one more pruned each time
    for f, m in snaps:
        kernel = S.conv_layers(m)[0].get_weights()[0]
        zero = np.all(kernel.reshape(-1, kernel.shape[-1]) == 0, axis=0)
        assert zero.mean() == pytest.approx(f)  # stayed pruned through the fine-tuning steps
    assert _same(before, victim.get_weights())
    with pytest.raises(ParameterError):
        S.fine_prune(victim, attack_x, y, max_fraction=1.0)


def test_a_pruned_snapshot_is_fine_tuned_with_its_channels_held_at_zero(victim, attack_x):
    """Fine-pruning's fine-tuning after pruning (issue 31): the copy trains (its weights change), its pruned
    channels stay zero (kernel, and the batch norm's scale and shift where one follows), the snapshot is left as
    it was."""
    from ipguard_tf.zoo.train import SGDRecipe

    y = np.argmax(victim.predict(attack_x, verbose=0), 1)
    (_, snap), *_ = S.fine_prune(
        victim, attack_x, y, max_fraction=0.5, snapshots=4, refresh=1, finetune_every=1, batch_size=32, progress=False
    )
    before = _weights(snap)
    pruned = S.pruned_channel_masks(snap)
    assert [int((1 - m).sum()) for _, _, m in pruned] == [1]
    tuned = S.finetune_pruned(snap, attack_x, y, recipe=SGDRecipe(0.05, epochs=1, batch_size=32), progress=False)
    assert _same(before, snap.get_weights()) and not _same(before, tuned.get_weights())
    (conv, bn, mask), *_ = S.pruned_channel_masks(tuned)
    np.testing.assert_array_equal(mask, pruned[0][2])
    kernel = np.asarray(conv.kernel).reshape(-1, mask.size)
    assert np.all(kernel[:, mask == 0] == 0) and np.any(kernel[:, mask == 1] != 0)
    if bn is not None:
        assert np.all(np.asarray(bn.gamma)[mask == 0] == 0) and np.all(np.asarray(bn.beta)[mask == 0] == 0)


def test_sgd_recipes_train_through_train_model_repeatably():
    """The zoo rebuilds git-ignored members from recipe and seed: the SGD path (with augmentation) must give the
    same weights twice."""
    from types import SimpleNamespace

    from ipguard_tf.zoo.train import Recipe, train_model

    rng = np.random.default_rng(0)
    ds = SimpleNamespace(
        x_train=rng.random((96, 28, 28, 1), dtype=np.float32),
        y_train=rng.integers(0, 10, 96),
        input_shape=(28, 28, 1),
        num_classes=10,
    )
    r = Recipe(
        "lenet5",
        epochs=2,
        batch_size=32,
        learning_rate=0.05,
        optimizer="sgd",
        weight_decay=5e-4,
        schedule="step",
        milestones=(1,),
        augmentation="crop4+flip",
    )
    a, b = (train_model(ds, r, seed=3, verbose=0) for _ in range(2))
    assert all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))
    c = train_model(ds, r, seed=4, verbose=0)
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


def test_finetune_last_only_updates_the_batch_norm_statistics_as_torch_train_mode(attack_x):
    """SAC's ``fine_tune.py`` puts the model in train() and optimises the head only: the feature layers' weights
    stay, their batch norms' running statistics move (a frozen Keras layer would keep them)."""
    import keras

    keras.utils.set_random_seed(3)
    inp = keras.Input(SHAPE)
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten()(keras.layers.MaxPooling2D()(keras.layers.ReLU()(x)))  # the head: after the pooling
    m = keras.Model(inp, keras.layers.Dense(CLASSES, name="head")(x))
    y = np.random.default_rng(0).integers(0, CLASSES, len(attack_x))
    r = S.SGDRecipe(0.05, epochs=1, batch_size=64)
    tuned = S.finetune(m, attack_x, y, last_only=True, recipe=r, progress=False)
    moved = S.transfer(m, attack_x, y % 2, 2, last_only=True, recipe=r, progress=False)  # Transfer-L alike
    for copy in (tuned, moved):
        old, new = m.get_layer("bn"), copy.get_layer("bn")
        assert _same(m.get_layer("conv").get_weights(), copy.get_layer("conv").get_weights())
        assert np.array_equal(np.asarray(old.gamma), np.asarray(new.gamma))
        assert np.array_equal(np.asarray(old.beta), np.asarray(new.beta))
        assert not np.array_equal(np.asarray(old.moving_mean), np.asarray(new.moving_mean))
        assert all(layer.trainable for layer in copy.layers)  # nothing left frozen in the returned model
    assert not _same(m.get_layer("head").get_weights(), tuned.get_layer("head").get_weights())
