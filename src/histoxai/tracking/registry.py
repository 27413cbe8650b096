"""The MLflow model registry: log and register a regressor, aliases, loading by URI.

Every training run registers a new version of ``model.registered_name`` with alias
``candidate`` (and ``champion`` when the model has none yet); ``histoxai promote`` moves
``champion``. ``models:/NAME@champion`` then loads a :class:`~histoxai.models.Regressor`
that takes (B, 3, H, W) RGB in [0, 1] and returns real units. Loading needs ``histoxai``
importable (the model is stored with MLflow's PyTorch flavour, i.e. pickled).
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
from collections.abc import Iterator, Mapping

import mlflow
import numpy as np
import timm
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo

from histoxai.errors import InputError, MissingModelError
from histoxai.models.regressor import Regressor
from histoxai.tracking.runs import TrackedRun

CANDIDATE, CHAMPION = "candidate", "champion"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


STATE_TAG = "histoxai.state"  # version tag: "pending" until the model directory is committed
PENDING, PUBLISHED = "pending", "published"


def register_regressor(
    run: TrackedRun,
    model: Regressor,
    registered_name: str,
    input_example: np.ndarray,
    tags: Mapping[str, str] | None = None,
) -> dict:
    """Log ``model`` to ``run`` (signature + input example) and register a new version
    tagged ``histoxai.state=pending``, with no alias.

    Nothing points at it until :func:`publish_version` (alias ``candidate``, and
    ``champion`` when the registered model has none yet); a pending version whose run died
    is removed by :func:`recover_registrations`.

    Args:
        run: the active run (see :func:`histoxai.tracking.start_run`).
        model: the trained regressor (moved to CPU, eval mode).
        registered_name: registry name, e.g. ``histoxai-mdfa``.
        input_example: (n, 3, H, W) float32 RGB in [0, 1]; a few patches.
        tags: version tags (targets, data hash, ...); also set on the registered model.

    Returns:
        ``{"model_name", "model_version", "model_uri", "logged_model_uri", "aliases": []}``.
    """
    model = model.cpu().eval()
    example = np.ascontiguousarray(input_example, dtype=np.float32)
    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    tags = {k: str(v) for k, v in (tags or {}).items()}
    with _quiet("mlflow.pytorch"):  # its warning on pickle: we need the class back (see below)
        info = _log_model(model, example, output, {**tags, STATE_TAG: PENDING})
    client = run.client
    version = register_logged_model(
        client, registered_name, info.model_id, run.run_id, {**tags, STATE_TAG: PENDING}
    )
    for k, v in tags.items():
        client.set_registered_model_tag(registered_name, k, v)
    return {
        "model_name": registered_name,
        "model_version": version,
        "model_uri": f"models:/{registered_name}/{version}",
        "logged_model_uri": info.model_uri,
        "aliases": [],
    }


def aliases_to_publish(client: MlflowClient, name: str) -> list[str]:
    """The aliases :func:`publish_version` will set: ``candidate``, and ``champion`` when
    ``name`` has none yet."""
    return [CANDIDATE] if alias_version(client, name, CHAMPION) is not None else [CANDIDATE, CHAMPION]


def publish_version(client: MlflowClient, name: str, version: str) -> list[str]:
    """Point ``candidate`` (and ``champion`` when there is none) at ``version`` and mark it
    published. Returns the aliases set."""
    aliases = aliases_to_publish(client, name)
    for alias in aliases:
        client.set_registered_model_alias(name, alias, str(version))
    client.set_model_version_tag(name, str(version), STATE_TAG, PUBLISHED)
    return aliases


def recover_registrations(client: MlflowClient, name: str, committed: str | None, is_dead) -> dict:
    """Finish or remove what a killed training left in the registry under ``name``.

    A ``pending`` version whose run is over (``is_dead(run)``) is published when it is
    ``committed`` (its model directory was swapped into place before the kill) and deleted
    otherwise; its run, if still RUNNING, is ended FINISHED or FAILED accordingly.

    Args:
        client: registry client.
        name: registered model name.
        committed: the version the model directory's ``run.json`` names, or None.
        is_dead: ``run -> bool``: the run's process is gone (see :mod:`histoxai.tracking.runs`).

    Returns:
        ``{"published": [versions], "deleted": [versions], "failed_runs": [run ids]}``.
    """
    done: dict[str, list[str]] = {"published": [], "deleted": [], "failed_runs": []}
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return done
    for mv in versions:
        if mv.tags.get(STATE_TAG) != PENDING:
            continue
        run = client.get_run(mv.run_id) if mv.run_id else None
        if run is not None and not is_dead(run):
            continue
        keep = committed is not None and str(mv.version) == str(committed)
        if keep:
            publish_version(client, name, str(mv.version))
            done["published"].append(str(mv.version))
        else:
            client.delete_model_version(name, str(mv.version))
            done["deleted"].append(str(mv.version))
        if run is not None and run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "FINISHED" if keep else "FAILED")
            if not keep:
                done["failed_runs"].append(run.info.run_id)
    return done


def register_logged_model(
    client: MlflowClient, name: str, model_id: str, run_id: str, tags: Mapping[str, str]
) -> str:
    """Register the logged model ``model_id`` (of ``run_id``) as a new version of ``name``
    (created when new) carrying ``tags``, through ``client``'s registry; returns the version.

    Nothing global is set: MLflow's ``registered_model_name=`` would register through the
    process-wide registry URI, which then leaks into every later client and subprocess."""
    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    mv = client.create_model_version(
        name,
        f"models:/{model_id}",
        run_id=run_id,
        tags={k: str(v) for k, v in tags.items()},
        model_id=model_id,
    )
    return str(mv.version)


def _log_model(model: Regressor, example: np.ndarray, output: np.ndarray, tags) -> ModelInfo:
    """Log ``model`` (unregistered) to the active run: see :func:`register_logged_model`."""
    return mlflow.pytorch.log_model(
        model,
        name="model",
        signature=infer_signature(example, output),
        input_example=example,
        # pickle keeps the Regressor class (targets, backbone for CAM layers); the default
        # pt2 export would load back as a bare graph module
        serialization_format="pickle",
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"timm=={timm.__version__}", "numpy"],
        tags={k: str(v) for k, v in (tags or {}).items()},
    )


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version ``alias`` points to, or None."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def resolve_model_uri(model_uri: str, tracking_uri: str) -> dict:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> ``{"name", "version",
    "run_id", "uri" (models:/NAME/VERSION), "tags", "aliases"}``."""
    match = _URI.match(model_uri)
    if match is None:
        raise InputError(f"model URI {model_uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    name = match["name"]
    try:
        if match["alias"]:
            mv = client.get_model_version_by_alias(name, match["alias"])
        else:
            mv = client.get_model_version(name, match["version"])
    except MlflowException as err:
        raise MissingModelError(
            f"model {model_uri!r} is not in the registry at {tracking_uri} ({err.message}); "
            "run `histoxai train` first or check the name/alias/version"
        ) from None
    return {
        "name": name,
        "version": str(mv.version),
        "run_id": mv.run_id,
        "uri": f"models:/{name}/{mv.version}",
        "tags": dict(mv.tags),
        "aliases": list(mv.aliases),
    }


def load_registered_model(model_uri: str, tracking_uri: str) -> tuple[Regressor, dict]:
    """Load a registered regressor (CPU, eval mode) and its registry info.

    Args:
        model_uri: ``models:/NAME@ALIAS`` (e.g. ``@champion``) or ``models:/NAME/VERSION``.
        tracking_uri: where the registry lives (see :func:`resolve_tracking_uri`).

    Returns:
        The model and ``{"name", "version", "run_id", "uri", "tags", "aliases"}``.
    """
    info = resolve_model_uri(model_uri, tracking_uri)
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    source = client.get_model_version_download_uri(info["name"], info["version"])
    with tempfile.TemporaryDirectory(prefix="histoxai-model-") as tmp:  # no global URI is set
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=tmp, tracking_uri=tracking_uri
        )
        model = mlflow.pytorch.load_model(local, map_location="cpu", weights_only=False)
    return model.eval(), info


def promote(name: str, version: str | int, tracking_uri: str, alias: str = CHAMPION) -> dict:
    """Point ``alias`` (default ``champion``) of registered model ``name`` at ``version``.

    Returns:
        ``{"name", "version", "alias", "previous"}`` (previous: the version it pointed to).
    """
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    try:
        mv = client.get_model_version(name, str(version))
    except MlflowException:
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        raise MissingModelError(
            f"registered model {name!r} has no version {version} in {tracking_uri}; versions: {versions}"
        ) from None
    if mv.tags.get(STATE_TAG) == PENDING:
        raise InputError(
            f"{name} version {version} is half-registered (its training never committed a model "
            "directory); the next `histoxai train` of this model removes it"
        )
    previous = alias_version(client, name, alias)
    client.set_registered_model_alias(name, alias, str(version))
    return {"name": name, "version": str(version), "alias": alias, "previous": previous}
