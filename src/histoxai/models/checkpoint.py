"""``model.pt``: a regressor saved as plain tensors and config, loadable without MLflow.

The file is a ``torch.save`` dict (safe to read with ``weights_only=True``)::

    {"format": "histoxai-regressor/1", "model": <model config as a dict>,
     "target_mean": [...], "target_std": [...], "stain_reference": {...} | None,
     "state_dict": {...}, "extra": {...}}
"""

from __future__ import annotations

from pathlib import Path

import torch

from histoxai.config import ModelConfig, parse, to_dict
from histoxai.data.provenance import StoreMismatchError, check_model_store, store_fingerprint  # noqa: F401
from histoxai.errors import InputError, MissingInputError
from histoxai.io import atomic_path
from histoxai.models.regressor import Regressor, build_regressor

FORMAT = "histoxai-regressor/1"


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


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", seed: int | None = None
) -> Regressor:
    """Rebuild the regressor saved by :func:`save_checkpoint` (in eval mode).

    The backbone is built without pretrained weights; every weight comes from the file.
    ``seed``: the file must hold the model of that training seed (``seeds/<seed>/model.pt``
    of a training output; a checkpoint that records no seed is accepted).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"no model checkpoint at {path} (run `histoxai train`)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, garbage, foreign pickle: torch raises several types
        raise InputError(
            f"{path} is damaged or not a histoxai checkpoint ({type(err).__name__}: {str(err)[:200]}); "
            "run `histoxai train` again"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path} is not a histoxai checkpoint (expected format {FORMAT!r})")
    raw = {**payload["model"], "pretrained": False, "pretrained_file": ""}
    cfg = parse(ModelConfig, raw, "model")
    model = build_regressor(cfg, payload["target_mean"], payload["target_std"], payload["stain_reference"])
    model.load_state_dict(payload["state_dict"])
    model.checkpoint_extra = payload.get("extra", {})
    made = model.checkpoint_extra.get("seed")
    if seed is not None and made not in (None, "") and int(made) != int(seed):
        raise InputError(f"{path} holds the model of training seed {made}, not {seed}")
    return model.eval()
