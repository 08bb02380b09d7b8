"""Cross-check against adversarial-robustness-toolbox (optional test dependency)."""

import numpy as np
import pytest

art = pytest.importorskip("art", reason="adversarial-robustness-toolbox is not installed (optional)")

from conftest import CLASSES, SHAPE  # noqa: E402

from ipguard_tf import as_classifier  # noqa: E402
from ipguard_tf.methods import CWL2, FGSM  # noqa: E402


def _art_classifier(model):
    import keras
    from art.estimators.classification import TensorFlowV2Classifier

    return TensorFlowV2Classifier(
        model=model,
        nb_classes=CLASSES,
        input_shape=SHAPE,
        clip_values=(0.0, 1.0),
        loss_object=keras.losses.CategoricalCrossentropy(from_logits=True),
    )


def _starts(seed, n):
    return np.random.default_rng(seed).random((n,) + SHAPE, dtype=np.float32)


def test_fgsm_equals_art(tiny_model, tiny_data):
    from art.attacks.evasion import FastGradientMethod

    eps = 0.05
    fp = FGSM(epsilon=eps, init="R", label="R", seed=21).generate(tiny_model, 32, tiny_data)
    x0 = _starts(21, 32)
    attack = FastGradientMethod(
        _art_classifier(tiny_model), norm=np.inf, eps=eps, eps_step=eps, targeted=True, batch_size=32
    )
    x_art = attack.generate(x0, y=np.eye(CLASSES)[fp.target])
    np.testing.assert_allclose(fp.x, x_art, atol=1e-6)


@pytest.mark.slow
def test_cw_matches_art_success_and_distortion(tiny_model, tiny_data):
    """Same kappa, binary-search steps, iterations, initial c and learning rate for both.

    ART's CarliniL2Method is not Carlini & Wagner's Adam loop: it runs gradient descent with a line search
    (halving/doubling its learning rate), so "the same settings" are not the same algorithm. With few
    iterations or a tiny initial c the two diverge (measured here: at 50 iterations and c = 1e-3, ART succeeds
    on 4 % of points and ours on 79 %); the settings below give both room to converge, and there the success
    rate and the mean L2 distortion agree within 10 %.
    """
    from art.attacks.evasion import CarliniL2Method

    n, lr, iters, steps, c0 = 24, 0.05, 100, 9, 0.1
    fp = CWL2(
        kappa=0.0,
        learning_rate=lr,
        max_iter=iters,
        binary_search_steps=steps,
        initial_const=c0,
        init="R",
        label="R",
        seed=11,
    ).generate(tiny_model, n, tiny_data)
    x0 = _starts(11, n)
    attack = CarliniL2Method(
        _art_classifier(tiny_model),
        confidence=0.0,
        targeted=True,
        learning_rate=lr,
        binary_search_steps=steps,
        max_iter=iters,
        initial_const=c0,
        batch_size=n,
        verbose=False,
    )
    x_art = attack.generate(x0, y=np.eye(CLASSES)[fp.target])
    ok_art = as_classifier(tiny_model).predict_labels(x_art) == fp.target
    l2_art = np.sqrt(((x_art - x0) ** 2).reshape(n, -1).sum(1))
    ours_rate, art_rate = fp.converged.mean(), ok_art.mean()
    ours_l2, art_l2 = fp.distortion[fp.converged].mean(), l2_art[ok_art].mean()
    print(f"success ours {ours_rate:.3f} ART {art_rate:.3f}; mean L2 ours {ours_l2:.4f} ART {art_l2:.4f}")
    assert abs(ours_rate - art_rate) <= 0.10 * art_rate
    assert abs(ours_l2 - art_l2) <= 0.10 * art_l2
