"""Extraction speed, measured side by side in one run on one machine (issue: extraction speed).

    python experiments/bench_extraction.py [--reps 3] [--n 100] [--out experiments/results/bench]

On the Fashion-MNIST target (pretrained/fashion_mnist/target.keras), n points, the paper's settings (-TL,
k = 1, learning rate 0.001, at most 1,000 iterations), it times: IPGuard batched (the library's default),
IPGuard one point at a time, an eager per-point loop in the style of DeepJudge's CBA, IPGuard with XLA, the
library's FGSM, IGSM and CW-L2 (at 1,000 iterations a search step; at the reference's 10,000 with --cw-reference),
and, when adversarial-robustness-toolbox is installed, ART's FastGradientMethod, BasicIterativeMethod and
CarliniL2Method with the same settings. Slow baselines (one point at a time, eager, CW-L2, ART CW) run on
--slow-n points and are scaled to n linearly (stated in the output). Prints and writes medians over --reps,
ratios to IPGuard batched, the per-sample-step cost against a bare forward+backward pass (the floor) and the
fraction of computed sample-steps spent on converged points.

The floor is measured two ways: against one forward+backward pass of the full batch of n (every step costed as
if all n points were still running), and against passes of *the same batches the search ran* (each graph call's
active batch size, from the search's own record), which is what a per-sample-step overhead means once finished
points are dropped: the search loop's wall time divided by the sum over graph calls of (iterations x the
floor at that batch size).

With --resnet50-n N (default 4) it also times ResNet50 (keras.applications, weights=None: the pretrained weights
cannot be downloaded here) at 224x224x3 with the paper's ImageNet learning rate 0.1, capped at --resnet50-iter
iterations (default 20; stated in the output): batched, one point at a time, XLA, and the floor.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from ipguard_tf import as_classifier  # noqa: E402
from ipguard_tf.evaluation.bench import eager_per_point_ipguard, forward_backward_seconds, same_batch_floor  # noqa: E402
from ipguard_tf.io.data import load_fashion_mnist  # noqa: E402
from ipguard_tf.io.files import run_record, write_csv, write_json  # noqa: E402
from ipguard_tf.methods import CWL2, FGSM, IGSM, IPGuard  # noqa: E402


def timed(fn, reps):
    out, times = None, []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def timed_batched(clf, n, x, reps, **kw):
    """Time IPGuard batched; also return the last run's graph calls (active points, iterations)."""
    med, ts, fp = timed(lambda: IPGuard(**kw).generate(clf, n, x), reps)
    return med, ts, fp, [tuple(s) for s in fp.metadata["segments"]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--slow-n", type=int, default=10, help="points for the slow baselines (scaled to n)")
    ap.add_argument("--k", type=float, default=1.0)
    ap.add_argument("--cw-reference", action="store_true", help="also CW-L2 at 10,000 iterations a step")
    ap.add_argument(
        "--art-cw",
        action="store_true",
        help="also time ART's CarliniL2Method (very slow here: about 15 min for 10 points)",
    )
    ap.add_argument("--resnet50-n", type=int, default=4, help="points for the ResNet50 rows (0: skip them)")
    ap.add_argument("--resnet50-iter", type=int, default=20, help="iteration cap for the ResNet50 rows")
    ap.add_argument(
        "--art-cw-reps",
        type=int,
        default=1,
        help="repetitions of ART's CarliniL2Method (default 1: one costs about 15 min here)",
    )
    ap.add_argument("--out", default="experiments/results/bench")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import keras

    ds = load_fashion_mnist()
    model = keras.saving.load_model(Path(__file__).resolve().parents[1] / "pretrained/fashion_mnist/target.keras")
    clf = as_classifier(model)
    n, sn, reps = args.n, args.slow_n, args.reps
    rows = []

    def add(name, median, times, points, extra=None, model_name="fmnist_cnn target", n_for=None):
        nn = n_for or n
        scaled = median * nn / points
        rows.append(
            {
                "model": model_name,
                "n": nn,
                "method": name,
                "points_timed": points,
                "median_s": round(median, 4),
                "seconds_for_n": round(scaled, 3),
                "reps": len(times),
                "all_s": " ".join(f"{t:.3f}" for t in times),
                **(extra or {}),
            }
        )
        print(f"{name:42s} {scaled:10.2f} s for {nn} points (timed {points}, median of {len(times)})", flush=True)

    kw = dict(k=args.k, init="T", label="L", seed=0)
    # warm-up: traces the graphs once, as a user's second call would find them
    IPGuard(max_iter=5, **kw).generate(clf, n, ds.x_train)
    med, ts, fp, segments = timed_batched(clf, n, ds.x_train, reps, **kw)
    st = fp.metadata["stats"]
    add(
        "IPGuard batched (library default)",
        med,
        ts,
        n,
        {
            "sample_steps": st["sample_steps"],
            "wasted_fraction": round(st["wasted_sample_steps"] / st["sample_steps"], 4),
            "converged": fp.n_converged,
        },
    )
    base = rows[-1]["seconds_for_n"]
    # per-sample-step cost vs the floor
    x0 = ds.x_train[:n]
    floor = forward_backward_seconds(clf.logits, x0)
    per_step = med / (st["sample_steps"] / n)  # seconds per iteration of a full batch of n
    print(
        f"  floor: forward+backward of {n} points {floor * 1e3:.2f} ms; IPGuard per batch step "
        f"{per_step * 1e3:.2f} ms ({per_step / floor:.2f}x the floor); "
        f"{100 * st['wasted_sample_steps'] / st['sample_steps']:.1f} % of sample-steps on converged points"
    )
    same = same_batch_floor(clf.logits, ds.x_train, segments)
    loop = st["loop_seconds"]
    print(
        f"  same batches: search loop {loop:.2f} s against {same:.2f} s of bare forward+backward passes of the "
        f"batches it ran ({loop / same:.2f}x the floor per computed sample-step)"
    )
    # what batching buys where a step costs the same for 1 or n points (a GPU far from saturation): the
    # one-at-a-time search runs every sample-step as its own step, the batched one runs `iterations` steps
    iterations = sum(steps for _, steps in segments)
    floor1 = forward_backward_seconds(clf.logits, ds.x_train[:1])
    print(
        f"  one point: forward+backward {floor1 * 1e3:.2f} ms, so a batch of {n} costs {floor / floor1:.1f} "
        f"single-point passes on this CPU; the batched search ran {iterations} steps for "
        f"{int(st['sample_steps'])} sample-steps: where a step costs the same for 1 or {n} points, batching "
        f"saves up to {st['sample_steps'] / iterations:.1f}x"
    )
    rows[-1].update(
        {
            "floor_ms": round(floor * 1e3, 3),
            "per_full_batch_step_ms": round(per_step * 1e3, 3),
            "floor_1_point_ms": round(floor1 * 1e3, 3),
            "batched_steps": iterations,
            "step_over_floor": round(per_step / floor, 3),
            "loop_s": round(loop, 3),
            "same_batch_floor_s": round(same, 3),
            "loop_over_same_batch_floor": round(loop / same, 3),
        }
    )

    IPGuard(max_iter=5, jit_compile=True, **kw).generate(clf, n, ds.x_train)
    med, ts, _ = timed(lambda: IPGuard(jit_compile=True, **kw).generate(clf, n, ds.x_train), reps)
    add("IPGuard batched, XLA (jit_compile)", med, ts, n)
    sub = ds.x_train  # the same seed draws the same first points
    med, ts, _ = timed(lambda: IPGuard(batch_size=1, **kw).generate(clf, sn, sub), reps)
    add("IPGuard one point at a time (paper)", med, ts, sn)
    rng = np.random.default_rng(0)
    xs = ds.x_train[rng.choice(len(ds.x_train), sn, replace=False)]
    z = clf.predict_logits(xs)
    med, ts, _ = timed(lambda: eager_per_point_ipguard(clf.logits, xs, z.argmax(1), z.argmin(1), args.k, 0.001), reps)
    add("eager per-point loop (DeepJudge CBA style)", med, ts, sn)
    FGSM(epsilon=0.1, init="T", label="L").generate(clf, n, ds.x_train)
    med, ts, _ = timed(lambda: FGSM(epsilon=0.1, init="T", label="L").generate(clf, n, ds.x_train), reps)
    add("FGSM (library)", med, ts, n)
    IGSM(epsilon=0.1, max_iter=5, init="T", label="L").generate(clf, n, ds.x_train)
    med, ts, _ = timed(lambda: IGSM(epsilon=0.1, init="T", label="L").generate(clf, n, ds.x_train), reps)
    add("IGSM (library)", med, ts, n)
    med, ts, fpc = timed(lambda: CWL2(kappa=args.k, init="T", label="L").generate(clf, sn, ds.x_train), reps)
    add("CW-L2 (library, 9 x 1,000 iterations)", med, ts, sn, {"converged": fpc.n_converged})
    if args.cw_reference:
        med, ts, fpc = timed(
            lambda: CWL2(kappa=args.k, max_iter=10000, init="T", label="L").generate(clf, sn, ds.x_train), reps
        )
        add("CW-L2 (library, 9 x 10,000 iterations)", med, ts, sn, {"converged": fpc.n_converged})
    try:
        _art(args, clf, ds, n, sn, reps, add, model)
    except ImportError:
        print("ART not installed: its rows are skipped")
    for r in rows:
        r["ratio_to_ipguard_batched"] = round(r["seconds_for_n"] / base, 2)
        print(f"{r['method']:42s} {r['ratio_to_ipguard_batched']:8.2f}x IPGuard batched")
    if args.resnet50_n:
        _resnet50(args, add, rows)
    out = Path(args.out)
    cols = [
        "model",
        "n",
        "method",
        "seconds_for_n",
        "ratio_to_ipguard_batched",
        "points_timed",
        "median_s",
        "reps",
        "all_s",
        "converged",
        "sample_steps",
        "wasted_fraction",
        "floor_ms",
        "per_full_batch_step_ms",
        "step_over_floor",
        "loop_s",
        "same_batch_floor_s",
        "loop_over_same_batch_floor",
        "floor_1_point_ms",
        "batched_steps",
    ]
    write_csv(out / "extraction.csv", rows, cols)
    write_json(out / "run.json", run_record(vars(args)))
    return 0


def _resnet50(args, add, rows):
    """ResNet50 (weights=None) at 224x224: batched vs one at a time vs XLA, and the floor."""
    from ipguard_tf.models.imagenet import as_imagenet_classifier

    clf = as_imagenet_classifier("ResNet50", None)
    rn, it = args.resnet50_n, args.resnet50_iter
    x = np.random.default_rng(0).random((rn, 224, 224, 3), dtype=np.float32)
    kw = dict(k=args.k, init="T", label="L", seed=0, max_iter=it)
    label = f"ResNet50 weights=None, {it} it."
    IPGuard(**dict(kw, max_iter=2)).generate(clf, rn, x)
    med, ts, fp, segments = timed_batched(clf, rn, x, args.reps, **kw)
    add(
        "IPGuard batched (library default)",
        med,
        ts,
        rn,
        {"converged": fp.n_converged, "sample_steps": fp.metadata["stats"]["sample_steps"]},
        model_name=label,
        n_for=rn,
    )
    base = rows[-1]["seconds_for_n"]
    floor = forward_backward_seconds(clf.logits, x, repeats=5)
    same = same_batch_floor(clf.logits, x, segments)
    loop = fp.metadata["stats"]["loop_seconds"]
    rows[-1].update(
        {
            "floor_ms": round(floor * 1e3, 3),
            "loop_s": round(loop, 3),
            "same_batch_floor_s": round(same, 3),
            "loop_over_same_batch_floor": round(loop / same, 3),
        }
    )
    print(
        f"  ResNet50 floor: forward+backward of {rn} points {floor * 1e3:.0f} ms; search loop {loop:.2f} s against "
        f"{same:.2f} s of bare passes of the same batches ({loop / same:.2f}x)"
    )
    med, ts, _ = timed(lambda: IPGuard(batch_size=1, **kw).generate(clf, rn, x), args.reps)
    add("IPGuard one point at a time (paper)", med, ts, rn, model_name=label, n_for=rn)
    IPGuard(**dict(kw, max_iter=2), jit_compile=True).generate(clf, rn, x)
    med, ts, _ = timed(lambda: IPGuard(jit_compile=True, **kw).generate(clf, rn, x), args.reps)
    add("IPGuard batched, XLA (jit_compile)", med, ts, rn, model_name=label, n_for=rn)
    for r in rows[-3:]:
        r["ratio_to_ipguard_batched"] = round(r["seconds_for_n"] / base, 2)
        print(f"{label}: {r['method']:42s} {r['ratio_to_ipguard_batched']:8.2f}x IPGuard batched")


def _art(args, clf, ds, n, sn, reps, add, model):
    import keras
    from art.attacks.evasion import BasicIterativeMethod, CarliniL2Method, FastGradientMethod
    from art.estimators.classification import TensorFlowV2Classifier

    est = TensorFlowV2Classifier(
        model=model,
        nb_classes=10,
        input_shape=(28, 28, 1),
        clip_values=(0.0, 1.0),
        loss_object=keras.losses.CategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    x = ds.x_train[rng.choice(len(ds.x_train), n, replace=False)]
    y = np.eye(10)[clf.predict_logits(x).argmin(1)]
    a = FastGradientMethod(est, eps=0.1, eps_step=0.1, targeted=True, batch_size=n)
    med, ts, _ = timed(lambda: a.generate(x, y=y), reps)
    add("ART FastGradientMethod", med, ts, n)
    b = BasicIterativeMethod(est, eps=0.1, eps_step=1 / 255, max_iter=1000, targeted=True, batch_size=n, verbose=False)
    med, ts, _ = timed(lambda: b.generate(x, y=y), reps)
    add("ART BasicIterativeMethod (1,000 it., no early stop)", med, ts, n)
    if not args.art_cw:
        print("ART CarliniL2Method skipped (pass --art-cw)")
        return
    c = CarliniL2Method(
        est,
        confidence=args.k,
        targeted=True,
        learning_rate=0.001,
        binary_search_steps=9,
        max_iter=1000,
        initial_const=1e-3,
        batch_size=sn,
        verbose=False,
    )
    med, ts, _ = timed(lambda: c.generate(x[:sn], y=y[:sn]), args.art_cw_reps)
    add("ART CarliniL2Method (9 x 1,000)", med, ts, sn)


if __name__ == "__main__":
    sys.exit(main())
