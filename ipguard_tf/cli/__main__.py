"""``python -m ipguard_tf.cli``: the ``ipguard`` command."""

import sys

from ipguard_tf.cli import main

sys.exit(main())
