"""Exit codes of the service commands and the one place that turns errors into them.

Same values as core/commands/exit_codes.py (service may not import core; a test keeps them equal).
No traceback reaches a user: every error becomes one ``lowbit: error: ...`` line and a code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable

from service.client import ClientError

OK = 0
FAILURE = 1  # the job failed (the message says why), or an unexpected error (a bug: please report it)
USAGE = 2  # bad command line (argparse uses 2 as well)
BAD_INPUT = 3  # a file, id or value was rejected (locally or by the service); the message says why
ACCURACY_TARGET_MISSED = 4  # the job ran but did not meet the requested accuracy target
CANCELLED = 5
SERVICE_ERROR = 6  # the service could not be reached, refused the key, or failed on its side

Command = Callable[[argparse.Namespace], int]

# 4xx answers that say the request itself was wrong (a value, a file, an id), not the service.
_BAD_INPUT_STATUSES = frozenset({400, 404, 409, 413, 415, 422})
_BAD_INPUT_CODES = frozenset({"bad_format", "bad_input"})


class UsageError(Exception):
    """A command-line value that is wrong in a way argparse cannot check (exit 2)."""


class BadInputError(Exception):
    """A local file or value that cannot be used (exit 3)."""


def exit_code_for(exc: ClientError) -> int:
    if exc.code == "no_api":
        return SERVICE_ERROR
    if exc.code in _BAD_INPUT_CODES or exc.status in _BAD_INPUT_STATUSES:
        return BAD_INPUT
    return SERVICE_ERROR


def guard(func: Command) -> Command:
    """``func`` with every error turned into a message on stderr and an exit code."""

    def run(args: argparse.Namespace) -> int:
        try:
            return int(func(args))
        except ClientError as exc:
            code = exit_code_for(exc)
            kind = "rejected" if code == BAD_INPUT else "service error"
            print(f"lowbit: {kind}: {exc}", file=sys.stderr)
            return code
        except UsageError as exc:
            print(f"lowbit: error: {exc}", file=sys.stderr)
            return USAGE
        except BadInputError as exc:
            print(f"lowbit: error: {exc}", file=sys.stderr)
            return BAD_INPUT
        except json.JSONDecodeError as exc:
            print(f"lowbit: error: not valid JSON: {exc}", file=sys.stderr)
            return BAD_INPUT
        except OSError as exc:  # a local file: missing, a directory, unreadable, disk full
            name = f" {exc.filename}" if exc.filename else ""
            print(f"lowbit: error: cannot use{name}: {exc.strerror or exc}", file=sys.stderr)
            return BAD_INPUT
        except KeyboardInterrupt:
            print("lowbit: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:  # a bug: one line for the user, the traceback only on request
            if os.environ.get("LOWBIT_DEBUG"):
                traceback.print_exc()
            print(
                f"lowbit: unexpected error: {type(exc).__name__}: {exc} (set LOWBIT_DEBUG=1 for the traceback)",
                file=sys.stderr,
            )
            return FAILURE

    run.__doc__ = func.__doc__
    return run
