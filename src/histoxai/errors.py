"""Errors a user can fix: the only exceptions the CLI turns into a one-line message.

Everything else (a numpy, torch or MLflow bug) keeps its traceback. Each class also
derives from the builtin a caller would expect (``ValueError``, ``FileNotFoundError``,
``ConnectionError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input the user can fix: a config value, a file, a flag, a model URI."""


class InputError(UserError, ValueError):
    """An input file or value is malformed or inconsistent (ingest, damaged store, bad flag)."""


class MissingInputError(UserError, FileNotFoundError):
    """An input file or directory does not exist (run the stage that writes it first)."""


class MissingModelError(InputError):
    """A registered model, version or alias is not in the registry."""


class TrackingError(UserError, ConnectionError):
    """The MLflow tracking URI is unreachable, of an unknown scheme, or points nowhere."""
