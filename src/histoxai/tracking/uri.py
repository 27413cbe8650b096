"""Which MLflow tracking store a command uses, checked before any work.

No mlflow import here (and none of torch): ``histoxai train`` against a dead server
fails in well under a second instead of after the heavy imports and MLflow's minutes of
retries.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from histoxai.errors import TrackingError

CHECK_TIMEOUT_S = 5.0  # an unreachable store is reported within this many seconds
_DB_SCHEMES = ("postgresql", "mysql", "mssql")
_REMOTE_SCHEMES = ("databricks", "databricks-uc", "uc")


def resolve_tracking_uri(
    explicit: str | None = None,
    repo_root: str | Path = ".",
    recorded: str | None = None,
    *,
    must_exist: bool = False,
    check: bool = True,
) -> str:
    """The tracking URI a command uses, checked so a dead or mistyped store fails fast.

    Precedence: ``explicit`` (a flag), ``$MLFLOW_TRACKING_URI``, ``recorded`` (the URI a
    ``run.json`` or saliency manifest holds), else ``sqlite:///<repo_root>/mlflow.db``.

    Args:
        explicit: a URI given on the command line (None or empty: not given).
        repo_root: where the default ``mlflow.db`` lives.
        recorded: the URI the input's run record names.
        must_exist: the command reads a registry or run that must already be there
            (a SQLite file that does not exist is then an error, not a new empty store).
        check: contact the store (see :func:`check_tracking_uri`).

    Raises:
        TrackingError: the store is unreachable, of an unknown kind or missing.
    """
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI") or recorded
    if not uri:
        uri = f"sqlite:///{(Path(repo_root).resolve() / 'mlflow.db').as_posix()}"
    if check:
        check_tracking_uri(uri, must_exist=must_exist)
    return uri


def check_tracking_uri(uri: str, must_exist: bool = False, timeout_s: float = CHECK_TIMEOUT_S) -> None:
    """Raise :class:`TrackingError` (one line naming the URI) unless ``uri`` is usable.

    ``http(s)://``: ``GET /health`` answers 200 within ``timeout_s`` (MLflow's own client
    retries for minutes). ``sqlite:///``: the file's directory exists (MLflow would
    create it silently), and the file too when ``must_exist``. ``postgresql://`` and
    other databases: a connection opens within ``timeout_s``. ``file:`` / plain paths:
    the directory exists. Any other scheme is an error.
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+")[0].lower()
    shown = redact(uri)
    if scheme in ("http", "https"):
        import requests

        try:
            answer = requests.get(uri.rstrip("/") + "/health", timeout=timeout_s)
        except requests.RequestException as err:
            reason = type(err).__name__.replace("Error", " error").strip()
            raise TrackingError(
                f"MLflow tracking server {shown} is unreachable ({reason}); start it (`mlflow server`) "
                "or set MLFLOW_TRACKING_URI"
            ) from None
        if answer.status_code != 200:
            raise TrackingError(
                f"{shown} does not look like an MLflow tracking server (GET /health: {answer.status_code})"
            )
    elif scheme == "sqlite":
        path = uri.split(":///", 1)[1] if ":///" in uri else ""
        if path in ("", ":memory:"):
            return
        db = Path(path)
        if not db.parent.is_dir():
            raise TrackingError(f"tracking URI {shown}: directory {db.parent} does not exist")
        if must_exist and not db.is_file():
            raise TrackingError(
                f"tracking URI {shown}: {db} does not exist (no runs or registered models there; "
                "run `histoxai train` first or set MLFLOW_TRACKING_URI)"
            )
    elif scheme in _DB_SCHEMES:
        _check_database(uri, shown, timeout_s)
    elif scheme in ("", "file"):
        folder = Path(parts.path if scheme == "file" else uri)
        if not (folder.is_dir() if must_exist else folder.parent.is_dir()):
            raise TrackingError(f"tracking URI {shown}: directory {folder} does not exist")
    elif scheme not in _REMOTE_SCHEMES:
        raise TrackingError(
            f"tracking URI {shown}: unknown scheme {parts.scheme!r}; expected http(s)://, sqlite:///, "
            "postgresql://, mysql://, file:// or a directory"
        )


def _check_database(uri: str, shown: str, timeout_s: float) -> None:
    import sqlalchemy

    args = {"connect_timeout": max(1, int(timeout_s))}
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=args, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect():
            pass
        engine.dispose()
    except (ImportError, sqlalchemy.exc.NoSuchModuleError) as err:
        raise TrackingError(f"tracking URI {shown}: no database driver for it ({err})") from None
    except sqlalchemy.exc.SQLAlchemyError as err:
        first = str(getattr(err, "orig", err) or err).strip().splitlines()[0]
        raise TrackingError(f"tracking store {shown} is unreachable: {first}") from None


def redact(uri: str) -> str:
    """``uri`` with any password replaced by ``***``."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
