"""The core: what a fingerprint is and how a suspect is judged, in NumPy only (no TensorFlow, no file paths, no
argparse, no progress bars; ``tests/test_core_numpy_only.py`` imports it with TensorFlow blocked).

:mod:`.errors`, :mod:`.constants` (the paper's defaults, once), :mod:`.threshold` (the verdict rule),
:mod:`.metrics` (robustness, uniqueness, ARUC, AUC, gap, Clopper-Pearson), :mod:`.tafa_statistics`,
:mod:`.fingerprint` (the value), :mod:`.calibration` (the null of independent models), :mod:`.statistics` (each
:class:`~.statistics.Statistic` computing itself) and :mod:`.registry` (every method's hyperparameters).
Layers above import from here; nothing here imports from them (``docs/architecture.md``).
"""
