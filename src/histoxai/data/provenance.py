"""Which patch store a model was trained on, and the check that it reads that store.

A training records ``patch_size_px`` and ``index_sha256`` (the SHA-256 of the store's
``index.parquet``: patch ids, targets, splits) in its checkpoint, its ``run.json`` and its
registry version tags. :func:`check_model_store` compares them with the store about to be
explained or evaluated (torch-free, so cheap to call first).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from histoxai.errors import InputError
from histoxai.io import file_sha256


class StoreMismatchError(InputError):
    """A model is used on a patch store other than the one it was trained on."""


def store_fingerprint(store: Any) -> str:
    """SHA-256 of a patch store's ``index.parquet``: recorded as ``index_sha256``."""
    return file_sha256(Path(store.root) / "index.parquet")


def check_model_store(facts: Mapping[str, Any], store: Any, model: str) -> None:
    """Raise :class:`StoreMismatchError` when a model was trained on another patch store.

    Args:
        facts: what the model recorded: a checkpoint's ``checkpoint_extra``, a registry
            version's tags or ``run.json``; ``patch_size_px`` and ``index_sha256`` are
            compared when present (models trained before they were recorded pass).
        store: the :class:`~histoxai.data.store.PatchStore` about to be read.
        model: how to name the model in the message (a path or ``models:/NAME/VERSION``).
    """
    size = facts.get("patch_size_px")
    if size not in (None, "") and int(size) != store.patch_size:
        raise StoreMismatchError(
            f"{model} was trained on {int(size)} px patches but the patch store {store.root} has "
            f"{store.patch_size} px patches; re-train it or point base.patches_dir at its store"
        )
    recorded = facts.get("index_sha256")
    if recorded and recorded != store_fingerprint(store):
        raise StoreMismatchError(
            f"{model} was trained on another patch store than {store.root} (index sha256 "
            f"{str(recorded)[:12]}... != {store_fingerprint(store)[:12]}...); was the store "
            "re-prepared after training? Re-train the model or restore its store"
        )
