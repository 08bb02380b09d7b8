"""Evaluation and reports: sweeps over methods and settings (:mod:`.sweep`), tables and figures
(:mod:`.report`), the HTML ownership report (:mod:`.ownership`), the demo (:mod:`.demo`) and the extraction
benchmarks' helpers (:mod:`.bench`)."""
