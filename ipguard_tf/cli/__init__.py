"""The ``ipguard`` command: one module per command (``fingerprint``, ``extract``, ``calibrate``, ``verify``,
``audit``, ``zoo``, ``protect``, ``demo``), each with ``add_parser(sub)`` and ``run(args)``, and :mod:`.common` for
what they share (the one-line-error rule: user mistakes exit 2, bugs exit 1, ``--debug`` shows tracebacks).

TensorFlow is imported only inside a command's ``run``, after the arguments have been parsed, so ``--help``
and argument errors are immediate.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import List, Optional

from ipguard_tf.cli import audit, calibrate, demo, extract, fingerprint, protect, verify, zoo
from ipguard_tf.cli.common import EXIT_INTERNAL, EXIT_USER_ERROR, Parser, run_command, subparsers

__all__ = ["main", "build_parser", "COMMANDS", "EXIT_USER_ERROR", "EXIT_INTERNAL"]

#: command name -> its module (``add_parser``, ``run``), in the order ``--help`` lists them
COMMANDS = {
    "fingerprint": fingerprint,
    "extract": extract,
    "verify": verify,
    "audit": audit,
    "calibrate": calibrate,
    "zoo": zoo,
    "protect": protect,
    "demo": demo,
}


def build_parser() -> Parser:
    p = Parser(
        prog="ipguard", description="IPGuard fingerprinting of Keras classifiers (Cao, Jia, Gong, AsiaCCS 2021)."
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info logging")
    sub = subparsers(p, "command", "COMMAND")
    for module in COMMANDS.values():
        module.add_parser(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(
        level=logging.DEBUG if args.debug else (logging.WARNING if args.quiet else logging.INFO),
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    if args.quiet:
        os.environ["IPGUARD_NO_PROGRESS"] = "1"
    return run_command(COMMANDS[args.command].run, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
