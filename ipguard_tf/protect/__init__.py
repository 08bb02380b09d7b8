"""Anti-piracy protection (Chen & Wu 2018, "Protect Your Deep Neural Networks from Piracy",
``../shared/papers/004_*``): a model trained to be accurate only on inputs passed through a secret transform.

Where IPGuard recognises a stolen copy afterwards, this makes a copy useless: the model alone misclassifies raw
inputs; only the key holder's transform makes it work. :mod:`.transforms` (Fixed, Learned, Generator),
:mod:`.training` (the loss and the loop), :mod:`.keyfile` (the key, apart from the model), :mod:`.threats`
(direct piracy, input-only and pair attacks), :mod:`.api` (the workflow) and :mod:`.cli` (``ipguard protect``).
The names below are imported on first use, so that the command line's ``--help`` stays free of TensorFlow.
"""

import importlib

_EXPORTS = {
    "evaluate": "api",
    "load_protected": "api",
    "protect": "api",
    "KeyFileError": "keyfile",
    "load_key": "keyfile",
    "save_key": "keyfile",
    "direct_piracy": "threats",
    "input_only_attack": "threats",
    "pair_attack": "threats",
    "ProtectSettings": "training",
    "evaluate_protection": "training",
    "train_protected": "training",
    "FixedTransform": "transforms",
    "GeneratorTransform": "transforms",
    "LearnedTransform": "transforms",
    "make_transform": "transforms",
    "psnr": "transforms",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
