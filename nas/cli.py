"""The ``nas`` command line. Each feature module registers its own subcommands here.

User errors (NasError) print one line, ``nas: error: ...``, and exit with code 2; no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import warnings

from nas.errors import NasError, path_error

# Modules that add subcommands: each has ``register(subparsers)``; the handler it sets as
# ``func`` takes the parsed args and returns an exit code.
COMMAND_MODULES = [
    "nas.commands",
    "predictors.cli",
    "nas.search.cli",
    "nas.distill.cli",
    "nas.finetune.cli",
]


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line and exit code 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


def positive_int(text: str) -> int:
    """argparse type for counts: an integer of at least 1 (``30e3`` is read as 30000)."""
    try:
        value = int(float(text)) if "e" in text.lower() else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def non_negative_float(text: str) -> float:
    """argparse type for amounts such as minutes: a finite number of at least 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be a number of at least 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nas", description="Hardware-aware architecture search over efficient BERT encoders.")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def quiet_third_party() -> None:
    """Silence import-time noise from fvcore and friends that users cannot act on."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: list[str] | None = None) -> int:
    quiet_third_party()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except NasError as err:
        sys.stderr.write(f"nas: error: {err}\n")
        return 2
    except OSError as err:
        if not err.filename:
            raise
        # A path the command writes or reads that the OS refuses (a read-only folder, a full disk).
        sys.stderr.write(f"nas: error: {path_error(err.filename, err, 'access')}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("nas: interrupted\n")
        return 130
    except BrokenPipeError:  # `nas space sample ... | head`
        return 0


def print_json_lines(records) -> None:
    for record in records:
        sys.stdout.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    sys.exit(main())
