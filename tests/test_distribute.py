"""Scale-out: extraction and verification under a tf.distribute strategy on two logical CPU devices give the same
fingerprint as one device (run in a subprocess: logical devices must be set before TensorFlow starts)."""

import textwrap

from conftest import run_python_script

SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from conftest import make_tiny_keras3
    from ipguard_tf import IPGuard, verify
    from ipguard_tf.methods import CWL2
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    model = make_tiny_keras3(0)
    data = np.random.default_rng(0).random((64, 8, 8, 1), dtype=np.float32)
    kw = dict(k=0.5, learning_rate=0.01, max_iter=150, seed=4)
    one = IPGuard(**kw).generate(model, 16, data)
    two = IPGuard(distribute=strategy, **kw).generate(model, 16, data)
    assert np.array_equal(one.iterations, two.iterations), (one.iterations, two.iterations)
    assert np.array_equal(one.y, two.y) and np.array_equal(one.converged, two.converged)
    assert np.allclose(one.x, two.x, atol=1e-6)
    # the shards' stats are returned and summed by the base (no shared counters updated from two threads)
    assert one.metadata["stats"]["sample_steps"] == two.metadata["stats"]["sample_steps"] > 0
    cw1 = CWL2(learning_rate=0.05, max_iter=50, binary_search_steps=2, seed=1).generate(model, 8, data)
    cw2 = CWL2(learning_rate=0.05, max_iter=50, binary_search_steps=2, seed=1, distribute=strategy)
    cw2 = cw2.generate(model, 8, data)
    assert np.allclose(cw1.x, cw2.x, atol=1e-6)
    other = make_tiny_keras3(5)
    assert verify(two, model, distribute=strategy).matching_rate == 1.0
    assert verify(two, other, distribute=strategy).matching_rate == verify(two, other).matching_rate
    print("OK")
""")


def test_two_logical_devices_same_fingerprint():
    r = run_python_script(SCRIPT)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]
