"""What every ``ipguard`` command shares, and nothing but the command line imports: the one-line-error parser,
number types for options, the exit codes and the error rule of :func:`run_command`.

Errors a user can cause (bad arguments, missing or corrupt files, wrong shapes: every
:class:`~ipguard_tf.core.errors.IPGuardError`, and file-system errors) print one line on stderr and exit with
status 2. Anything else is a bug: it prints one line saying so and exits with status 1; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

from ipguard_tf.core.checks import check_number, range_text
from ipguard_tf.core.errors import IPGuardError, ParameterError

log = logging.getLogger("ipguard_tf")

EXIT_USER_ERROR = 2
EXIT_INTERNAL = 1


class Parser(argparse.ArgumentParser):
    """argparse whose errors are a single line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An option type: an integer >= ``minimum``."""
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def parse(s: str) -> int:
        try:
            return int(check_number(int(s), "value", minimum, integer=True))
        except (ValueError, ParameterError):
            raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}") from None

    return parse


positive_int = int_at_least(1)
nonneg_int = int_at_least(0)


def number(lo: Optional[float] = None, hi: Optional[float] = None, strict: bool = False) -> Callable[[str], float]:
    """An option type: a finite number in [lo, hi] (``strict``: lo excluded)."""

    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
        try:
            return check_number(v, "value", lo, hi, low_open=strict)
        except ParameterError:
            raise argparse.ArgumentTypeError(
                f"expected a finite number {range_text(lo, hi, low_open=strict)}, got {s!r}"
            ) from None

    return parse


def command_line(args: argparse.Namespace) -> str:
    """The command as the user typed it (recorded in the files it writes)."""
    return "ipguard " + " ".join(args.argv)


def check_out_file(path: str, option: str = "--out") -> None:
    """Refuse, before any work, an output file that cannot be written: a folder, or a file in a folder that is not
    writable; a missing parent folder is created, with a notice."""
    p = Path(path)
    if p.is_dir():
        raise ParameterError(f"{option} {path} is a folder; give the file to write")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        notice(f"creating the folder {parent} for {option}")
        parent.mkdir(parents=True, exist_ok=True)
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ParameterError(f"{option} {path}: cannot write into {parent}")


def notice(message: str) -> None:
    """A line for the person at the terminal (stderr), e.g. that zoo members will be rebuilt."""
    sys.stderr.write(f"ipguard: {message}\n")


def run_command(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``run(args)`` with the error rule of the module docstring."""
    try:
        if not args.debug:
            quiet_tensorflow()
        return run(args)
    except KeyboardInterrupt:
        sys.stderr.write("ipguard: interrupted\n")
        return 130
    except MemoryError as exc:  # an allocation the estimate did not foresee: the request was too large
        if args.debug:
            raise
        sys.stderr.write(
            f"ipguard: error: out of memory ({exc or 'allocation failed'}): use a smaller --n or --batch-size\n"
        )
        return EXIT_USER_ERROR
    except (IPGuardError, OSError) as exc:  # the user's mistake, or the file system's
        if args.debug:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        sys.stderr.write(f"ipguard: error: {msg}\n")
        return EXIT_USER_ERROR
    except Exception as exc:  # a bug: said as such, in one line; --debug shows the traceback
        if args.debug:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        sys.stderr.write(
            f"ipguard: internal error (a bug, please report it): {type(exc).__name__}: {msg[:300]} "
            "(rerun with --debug for the traceback)\n"
        )
        return EXIT_INTERNAL


def quiet_tensorflow() -> None:
    """Import TensorFlow with its native start-up chatter (CUDA probing, oneDNN notices) kept off stderr, so
    that an error is the only line a user sees. Nothing about devices is changed."""
    warnings.filterwarnings("ignore")
    if "tensorflow" not in sys.modules:
        saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        try:
            import tensorflow as tf

            tf.config.list_logical_devices()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(null)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except Exception:
        pass
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)


def subparsers(parser: argparse.ArgumentParser, dest: str, metavar: str) -> Any:
    """Required subcommands of ``parser`` whose errors are one line."""
    sub = parser.add_subparsers(dest=dest, metavar=metavar, parser_class=Parser)
    sub.required = True
    return sub
