"""TF-MOT sets TF_USE_LEGACY_KERAS=1 for the whole process; extraction and verification must still work on
Keras 3 and Keras 2 models. Run in a subprocess so the variable does not leak into the other tests."""

import textwrap

from conftest import run_python_script

SCRIPT = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {tests!r})
    import tensorflow_model_optimization as tfmot  # sets TF_USE_LEGACY_KERAS=1
    assert os.environ.get("TF_USE_LEGACY_KERAS") == "1"
    import tensorflow as tf
    import numpy as np
    assert tf.keras.__name__.startswith("tf_keras"), tf.keras.__name__
    from conftest import make_tiny_keras3, make_tiny_tf_keras
    from ipguard_tf import IPGuard, verify
    k3 = make_tiny_keras3(0)
    k2 = make_tiny_tf_keras(k3.get_weights(), softmax=True)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(k2)  # a TF-MOT wrapped Keras 2 model
    data = np.random.default_rng(0).random((32, 8, 8, 1), dtype=np.float32)
    fp3 = IPGuard(k=0.5, learning_rate=0.01, max_iter=100).generate(k3, 8, data)
    fp2 = IPGuard(k=0.5, learning_rate=0.01, max_iter=100).generate(k2, 8, data)
    assert np.allclose(fp3.x, fp2.x, atol=1e-4)
    for fp in (fp3, fp2):
        assert verify(fp, k3).matching_rate == 1.0
        assert verify(fp, k2).matching_rate == 1.0
    # wrapped for pruning but not yet pruned (masks of ones): the same function, so the same labels everywhere
    assert verify(fp3, pruned).matching_rate == 1.0, verify(fp3, pruned).matching_rate
    print("OK")
""")


def test_extract_and_verify_with_tf_use_legacy_keras():
    r = run_python_script(SCRIPT)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]
