import numpy as np
import pytest
from conftest import CLASSES, SHAPE

from ipguard_tf import IPGuard, as_classifier
from ipguard_tf.core.constants import LEARNING_RATE_IMAGENET, LEARNING_RATE_SMALL
from ipguard_tf.methods import build_method, default_learning_rate

K = 0.5


@pytest.fixture(scope="module")
def fps(tiny_model, tiny_data):
    """One fingerprint per strategy (TR, TL, RR, RL) on the tiny model."""
    out = {}
    for s in ("TR", "TL", "RR", "RL"):
        out[s] = IPGuard(k=K, init=s[0], label=s[1], seed=3, learning_rate=0.01, max_iter=300).generate(
            tiny_model, 24, tiny_data
        )
    return out


@pytest.mark.parametrize("strategy", ["TR", "TL", "RR", "RL"])
def test_strategies_sources_and_targets(fps, tiny_model, tiny_data, strategy):
    fp = fps[strategy]
    clf = as_classifier(tiny_model)
    assert np.all(fp.source != fp.target), "j must never equal i"
    assert fp.metadata["strategy"] == strategy
    # T starts at training examples: the recorded source label is the target's label there
    rng = np.random.default_rng(3)
    if strategy[0] == "T":
        x0 = tiny_data[rng.choice(len(tiny_data), size=24, replace=False)]
    else:
        x0 = rng.random((24,) + SHAPE, dtype=np.float32)
    logits0 = clf.predict_logits(x0)
    assert np.array_equal(fp.source, logits0.argmax(1))
    if strategy[1] == "L":
        assert np.array_equal(fp.target, logits0.argmin(1))
    else:
        assert len(set(fp.target.tolist())) > 1


@pytest.mark.parametrize("strategy", ["TR", "TL", "RR", "RL"])
def test_converged_points_satisfy_eq5(fps, tiny_model, strategy):
    fp = fps[strategy]
    assert fp.n_converged >= 0.5 * len(fp), "most points should converge on the tiny model"
    z = as_classifier(tiny_model).predict_logits(fp.x)
    c = fp.converged
    idx = np.arange(len(fp))
    zi, zj = z[idx, fp.source], z[idx, fp.target]
    zo = np.array([np.max(np.delete(z[r], [fp.source[r], fp.target[r]])) for r in idx])
    assert np.all(z[c].argmax(1) == fp.target[c])
    assert np.all(zj[c] - zi[c] >= K - 1e-3)
    assert np.all(zi[c] >= zo[c] - 1e-3)
    assert np.all(fp.y[c] == fp.target[c])
    assert fp.x.min() >= 0.0 and fp.x.max() <= 1.0
    assert np.all(fp.objective[c] <= 1e-3)
    assert np.all(fp.objective[~c] > 0)


def test_per_point_early_stopping(fps):
    fp = fps["TR"]
    c = fp.converged
    assert np.all(fp.iterations[c] < 300)
    assert np.all(fp.iterations[~c] == 300)
    assert len(set(fp.iterations[c].tolist())) > 1, "points stop at their own iteration"


def test_batched_equals_one_point_at_a_time(tiny_model, tiny_data):
    kw = dict(k=K, init="T", label="R", seed=5, learning_rate=0.01, max_iter=200)
    a = IPGuard(**kw).generate(tiny_model, 8, tiny_data)
    b = IPGuard(batch_size=1, **kw).generate(tiny_model, 8, tiny_data)
    assert np.array_equal(a.iterations, b.iterations)
    assert np.array_equal(a.converged, b.converged)
    np.testing.assert_allclose(a.x, b.x, atol=1e-5)


def test_segment_length_does_not_change_result(tiny_model, tiny_data):
    kw = dict(k=K, init="R", label="L", seed=2, learning_rate=0.01, max_iter=150)
    a = IPGuard(segment=1, **kw).generate(tiny_model, 12, tiny_data)
    b = IPGuard(segment=50, **kw).generate(tiny_model, 12, tiny_data)
    assert np.array_equal(a.iterations, b.iterations)
    np.testing.assert_allclose(a.x, b.x, atol=1e-5)


def test_deterministic_for_a_seed(tiny_model, tiny_data):
    kw = dict(k=K, learning_rate=0.01, max_iter=100)
    a = IPGuard(seed=7, **kw).generate(tiny_model, 10, tiny_data)
    b = IPGuard(seed=7, **kw).generate(tiny_model, 10, tiny_data)
    c = IPGuard(seed=8, **kw).generate(tiny_model, 10, tiny_data)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y) and np.array_equal(a.iterations, b.iterations)
    assert not np.array_equal(a.x, c.x)


def test_zero_iterations_keeps_start_and_flags_unconverged(tiny_model, tiny_data):
    fp = IPGuard(k=5.0, max_iter=0, init="T", label="L").generate(tiny_model, 6, tiny_data)
    assert np.all(fp.iterations == 0)
    assert np.all(fp.distortion == 0)
    assert not fp.converged.any()


def test_metadata_records_everything(fps):
    m = fps["TL"].metadata
    for key in (
        "method",
        "params",
        "seed" if False else "strategy",
        "n",
        "input_shape",
        "value_range",
        "target",
        "versions",
        "created",
        "n_converged",
    ):
        assert key in m
    assert m["params"]["k"] == K and m["params"]["seed"] == 3 and m["params"]["max_iter"] == 300
    assert m["target"]["weights_sha256"] and len(m["target"]["weights_sha256"]) == 64
    assert m["input_shape"] == list(SHAPE) and m["num_classes"] == CLASSES


@pytest.mark.parametrize(
    "bad",
    [
        dict(k=-1),
        dict(k=float("nan")),
        dict(init="X"),
        dict(label="Q"),
        dict(max_iter=-1),
        dict(learning_rate=0),
        dict(seed=-2),
        dict(batch_size=0),
        dict(segment=0),
    ],
)
def test_bad_parameters_raise(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        IPGuard(**bad)


def test_build_method_unknown():
    with pytest.raises(ValueError, match="method"):
        build_method("nope")


def test_t_init_needs_data(tiny_model):
    from ipguard_tf.core.errors import DataError

    with pytest.raises(DataError):
        IPGuard(init="T").generate(tiny_model, 4, None)


def test_default_learning_rates():
    assert default_learning_rate((28, 28, 1)) == LEARNING_RATE_SMALL
    assert default_learning_rate((32, 32, 3)) == LEARNING_RATE_SMALL
    assert default_learning_rate((224, 224, 3)) == LEARNING_RATE_IMAGENET


def test_generate_twice_on_one_instance_with_a_checkpoint(tiny_model, tiny_data, tmp_path):
    """The checkpoint's run identity is computed from the resolved hyperparameters, so a second generate() on
    the same instance (after an interruption, say) resumes the same checkpoint instead of refusing it."""
    ckpt = tmp_path / "c.npz"
    m = IPGuard(k=K, max_iter=30, seed=1)  # learning_rate None: resolved from the input size
    a = m.generate(tiny_model, 6, tiny_data, checkpoint=ckpt, checkpoint_every=0)
    assert ckpt.exists()
    b = m.generate(tiny_model, 6, tiny_data, checkpoint=ckpt)
    np.testing.assert_array_equal(a.x, b.x)
    assert a.metadata["params"]["learning_rate"] == LEARNING_RATE_SMALL == b.metadata["params"]["learning_rate"]


@pytest.mark.parametrize(
    "make",
    [
        lambda: IPGuard(k=K, learning_rate=0.01, max_iter=20, batch_size=4),
        lambda: build_method("cw", max_iter=5, binary_search_steps=2, batch_size=4),
        lambda: build_method("igsm", max_iter=5),
        lambda: build_method("fgsm"),
        lambda: build_method("random"),
    ],
)
def test_generate_leaves_the_method_as_constructed(make, tiny_model, tiny_data, tmp_path):
    """Methods and the search talk through arguments and return values only: generate() sets no attribute, and
    the base sums the per-batch stats (10 points in batches of 4 here)."""
    m = make()
    before = dict(vars(m))
    fp = m.generate(tiny_model, 10, tiny_data, checkpoint=tmp_path / "c.npz")
    assert vars(m) == before
    if "sample_steps" in fp.metadata["stats"]:
        segments = fp.metadata["segments"]
        assert fp.metadata["stats"]["sample_steps"] == sum(b * steps for b, steps in segments)
