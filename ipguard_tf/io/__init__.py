"""Files and state, above the core: atomic writes and tables (:mod:`.files`), checked archives
(:mod:`.checked_file`), the fingerprint file (:mod:`.fingerprint_file`), resumable state (:mod:`.checkpoint`),
progress bars (:mod:`.progress`), records of the machine and versions (:mod:`.env_info`) and the datasets
(:mod:`.data`, :mod:`.imagenet_data`).
"""
