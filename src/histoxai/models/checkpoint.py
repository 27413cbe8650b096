"""``model.pt``: a regressor saved as plain tensors and config, loadable without MLflow.

The file is a ``torch.save`` dict (safe to read with ``weights_only=True``)::

    {"format": "histoxai-regressor/1", "model": <model config as a dict>,
     "target_mean": [...], "target_std": [...], "stain_reference": {...} | None,
     "state_dict": {...}, "extra": {...}}
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from histoxai.config import ModelConfig, parse, to_dict
from histoxai.io import atomic_path
from histoxai.models.regressor import Regressor, build_regressor

FORMAT = "histoxai-regressor/1"


class StoreMismatchError(ValueError):
    """A model is used on a patch store other than the one it was trained on."""


def save_checkpoint(path: str | Path, model: Regressor, cfg: ModelConfig, extra: dict | None = None) -> Path:
    """Write ``model`` (built from ``cfg``) to ``path`` atomically.

    Args:
        path: destination, e.g. ``models/histoxai-mdfa/model.pt``.
        model: the regressor.
        cfg: the config it was built from (rebuilds the architecture on load).
        extra: small JSON-like metadata kept alongside (run id, data hash, ...).
    """
    stain = model.stain.reference() if hasattr(model.stain, "reference") else None
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "model": to_dict(cfg),
        "target_mean": model.target_mean.tolist(),
        "target_std": model.target_std.tolist(),
        "stain_reference": stain,
        "state_dict": state,
        "extra": extra or {},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Regressor:
    """Rebuild the regressor saved by :func:`save_checkpoint` (in eval mode).

    The backbone is built without pretrained weights; every weight comes from the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model checkpoint at {path} (run `histoxai train`)")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a histoxai checkpoint (expected format {FORMAT!r})")
    raw = {**payload["model"], "pretrained": False, "pretrained_file": ""}
    cfg = parse(ModelConfig, raw, "model")
    model = build_regressor(cfg, payload["target_mean"], payload["target_std"], payload["stain_reference"])
    model.load_state_dict(payload["state_dict"])
    model.checkpoint_extra = payload.get("extra", {})
    return model.eval()


def store_fingerprint(store: Any) -> str:
    """SHA-256 of a patch store's ``index.parquet`` (patch ids, targets, splits): recorded
    with every trained model (``index_sha256``) and compared by :func:`check_model_store`."""
    h = hashlib.sha256()
    with open(Path(store.root) / "index.parquet", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_model_store(facts: Mapping[str, Any], store: Any, model: str) -> None:
    """Raise :class:`StoreMismatchError` when a model was trained on another patch store.

    Args:
        facts: what the model recorded: a checkpoint's ``checkpoint_extra``, a registry
            version's tags or ``run.json``; ``patch_size_px`` and ``index_sha256`` are
            compared when present (older models lack them and pass).
        store: the :class:`~histoxai.data.store.PatchStore` about to be read.
        model: how to name the model in the message (a path or ``models:/NAME/VERSION``).
    """
    size = facts.get("patch_size_px")
    if size not in (None, "") and int(size) != store.patch_size:
        raise StoreMismatchError(
            f"{model} was trained on {int(size)} px patches but the patch store {store.root} has "
            f"{store.patch_size} px; re-train it or point base.patches_dir at its store"
        )
    recorded = facts.get("index_sha256")
    if recorded and recorded != store_fingerprint(store):
        raise StoreMismatchError(
            f"{model} was trained on another patch store than {store.root} (index sha256 "
            f"{str(recorded)[:12]}... != {store_fingerprint(store)[:12]}...); was the store "
            "re-prepared after training? Re-train the model or restore its store"
        )
