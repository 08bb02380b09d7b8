"""Verification: suspects against a fingerprint, local or remote (:mod:`.suspects`, :mod:`.remote`), and the
calibration of a fingerprint on independent models (:mod:`.calibration`)."""
