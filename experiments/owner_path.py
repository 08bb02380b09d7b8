"""The owner's path measured (issue 30): ``ipguard fingerprint`` on two models, against the fixed default setting.

    python experiments/owner_path.py fmnist [--out experiments/results/owner_path]
    python experiments/owner_path.py cifar-shaped [--out experiments/results/owner_path] [--epochs 2]

``fmnist``: the repository's Fashion-MNIST target with ``--data fashion_mnist --negatives 5`` (the command alone:
data, self-tuned k, five negatives trained, calibration at 1 % FPR, report). Then the chosen fingerprint and one made
with the fixed default (``ipguard extract``: IPGuard-TL, k = 1, n = 100, seed 0) are both scored on the self-made
copies (remade with the same seed), on the zoo's positives and negatives (``pretrained/fashion_mnist``), and on the
five trained negatives.

``cifar-shaped``: a model not in the repository, of another input shape: ResNet18 at width 1/8
(:func:`ipguard_tf.zoo.architectures.resnet18`, Keras 2, softmax head, saved as ``.h5``) trained with Adam (1e-3,
batch 128, ``--epochs``, seed 0) on Fashion-MNIST padded to 32x32 and repeated over three channels; then
``ipguard fingerprint --model resnet.h5 --out fp.npz`` and nothing else (no data: uniform starting points). The
chosen fingerprint and the fixed default (``ipguard extract --init R``, k = 1) are scored on the copies pruned 10 %
and 30 % without retraining and on ten models of the same architecture with fresh random weights (seeds 201-210,
none of them seen by the tuning, which uses seeds 101-105). The same is done for the same architecture untrained
(random weights), the issue's test case.

Results: ``OUT/<part>.json`` (rates per model and fingerprint, the tuning record, provenance), ``OUT/README.md``
written by hand from them. Work files (models, fingerprints, negatives) go to ``OUT/work`` (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ipguard_tf.cli import main as ipguard  # noqa: E402
from ipguard_tf.io.data import load_fashion_mnist  # noqa: E402
from ipguard_tf.io.files import run_record, write_json  # noqa: E402
from ipguard_tf.io.fingerprint_file import load_fingerprint  # noqa: E402
from ipguard_tf.models.classifier import as_classifier, load_model_file  # noqa: E402
from ipguard_tf.verification.suspects import verify_suspects  # noqa: E402
from ipguard_tf.zoo.architectures import resnet18  # noqa: E402
from ipguard_tf.zoo.copies import cheap_copies, magnitude_pruned  # noqa: E402
from ipguard_tf.zoo.negatives import fresh_clone  # noqa: E402

ZOO = "pretrained/fashion_mnist"
HELD_OUT_RANDOM = tuple(range(201, 211))


def _cli(argv):
    buf = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        rc = ipguard(argv)
    if rc != 0:
        raise SystemExit(f"ipguard {' '.join(argv)} exited with {rc}")
    print(buf.getvalue())
    return buf.getvalue(), time.perf_counter() - t0


def _rates(fp, models):
    return {name: float(np.mean(as_classifier(m).predict_labels(fp.x) == fp.y)) for name, m in models}


def _fingerprints(model: str, work: Path, stem: str, extra, default_extra):
    chosen, default = work / f"{stem}.npz", work / f"{stem}_default.npz"
    out1, s1 = _cli(["-q", "fingerprint", "--model", model, "--out", str(chosen), *extra])
    out2, s2 = _cli(["-q", "extract", "--model", model, "--out", str(default), *default_extra])
    return load_fingerprint(chosen), load_fingerprint(default), {"fingerprint": out1, "extract": out2}, (s1, s2)


def fmnist(out: Path) -> None:
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    target = f"{ZOO}/target.keras"
    cmd = ["--data", "fashion_mnist", "--negatives", "5"]
    chosen, default, printed, secs = _fingerprints(target, work, "fmnist", cmd, [])
    raw = load_model_file(target)
    ds = load_fashion_mnist()
    copies = [(c.name, c.model) for c in cheap_copies(raw, x=ds.x_train, y=ds.y_train, seed=0)]
    negs = sorted((work / "fmnist.negatives").glob("negative-*.keras"))
    own = [(p.stem, load_model_file(p)) for p in negs]
    rows = {}
    for label, fp in (("chosen", chosen), ("default", default)):
        rep = verify_suspects(fp, [ZOO], threshold=0.5)
        rows[label] = {
            "setting": f"k={fp.metadata['params']['k']:g} {fp.metadata['strategy']}",
            "copies": _rates(fp, copies),
            "own_negatives": _rates(fp, own),
            "zoo": {r.suspect: {"rate": r.value, "role": role} for r, role in zip(rep.results, rep.roles)},
        }
    write_json(
        out / "fmnist.json",
        {
            "run": run_record({"part": "fmnist", "fingerprint_args": cmd, "seed": 0, "n": 100}),
            "seconds": {"fingerprint": secs[0], "extract_default": secs[1]},
            "printed": printed,
            "owner": chosen.metadata["owner"],
            "calibration": chosen.metadata.get("calibration", {}).get("threshold"),
            "rates": rows,
        },
    )


def _resnet(seed: int, epochs: int, work: Path) -> str:
    import tf_keras

    path = work / f"resnet18w8_e{epochs}.h5"
    if path.exists():
        return str(path)
    tf_keras.utils.set_random_seed(seed)
    m = resnet18((32, 32, 3), 10, width=0.125, K=tf_keras)
    m = tf_keras.Model(m.inputs, tf_keras.layers.Softmax(name="softmax")(m.outputs[0]), name="resnet18w8")
    if epochs:
        ds = load_fashion_mnist()
        x = np.pad(np.repeat(ds.x_train, 3, axis=-1), ((0, 0), (2, 2), (2, 2), (0, 0)))
        m.compile(tf_keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
        m.fit(x, ds.y_train, batch_size=128, epochs=epochs, verbose=2)
    m.save(path)
    return str(path)


def cifar_shaped(out: Path, epochs: int) -> None:
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    ds = load_fashion_mnist()
    xt = np.pad(np.repeat(ds.x_test, 3, axis=-1), ((0, 0), (2, 2), (2, 2), (0, 0)))
    result = {"run": run_record({"part": "cifar-shaped", "epochs": epochs, "seed": 0, "n": 100}), "models": {}}
    for ep in (epochs, 0):
        path = _resnet(0, ep, work)
        raw = load_model_file(path)
        acc = float(np.mean(as_classifier(raw).predict_labels(xt) == ds.y_test))
        chosen, default, printed, secs = _fingerprints(path, work, Path(path).stem, [], ["--init", "R"])
        models = [(f"pruned-{int(p * 100)}", magnitude_pruned(raw, p)) for p in (0.1, 0.3)]
        copy_acc = {name: float(np.mean(as_classifier(m).predict_labels(xt) == ds.y_test)) for name, m in models}
        models += [(f"random-{s}", fresh_clone(raw, s)) for s in HELD_OUT_RANDOM]
        result["models"]["trained" if ep else "random_weights"] = {
            "file": Path(path).name,
            "epochs": ep,
            "test_accuracy": acc,
            "copy_test_accuracy": copy_acc,
            "seconds": {"fingerprint": secs[0], "extract_default": secs[1]},
            "printed": printed,
            "owner": chosen.metadata["owner"],
            "rates": {
                label: {"setting": f"k={fp.metadata['params']['k']:g} {fp.metadata['strategy']}", **_rates(fp, models)}
                for label, fp in (("chosen", chosen), ("default", default))
            },
        }
        write_json(out / "cifar_shaped.json", result)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["fmnist", "cifar-shaped"])
    ap.add_argument("--out", default="experiments/results/owner_path")
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    out = Path(args.out)
    if args.part == "fmnist":
        fmnist(out)
    else:
        cifar_shaped(out, args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
