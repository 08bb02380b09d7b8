"""The owner's path (issue 30): fingerprint a model its owner brings, with the setting tuned on cheap copies of it
and, where there are any, on independent models of its architecture (:mod:`.tune`), calibrated and reported
(:mod:`.path`, which ``ipguard fingerprint`` runs)."""
