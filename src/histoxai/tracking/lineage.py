"""Dataset lineage of a training run: which patch store, from which source, which content.

The content hash is DVC's hash of the store directory from ``dvc.lock`` when a stage
there outputs it (``dvc`` kind; matches ``dvc data status`` / the DVC cache), else the
SHA-256 of ``index.parquet`` (``index-sha256`` kind) for stores built outside DVC.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from histoxai.io import file_sha256


def dvc_lock_hash(out_path: str | Path, repo_root: str | Path) -> str | None:
    """The md5 DVC recorded in ``<repo_root>/dvc.lock`` for output ``out_path``, or None."""
    lock = Path(repo_root) / "dvc.lock"
    if not lock.is_file():
        return None
    try:
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    except yaml.YAMLError:
        return None
    root = Path(repo_root).resolve()
    target = Path(out_path)
    target = (target if target.is_absolute() else root / target).resolve()
    for stage in stages.values():
        for out in stage.get("outs", []) or []:
            if (root / out.get("path", "")).resolve() == target and out.get("md5"):
                return str(out["md5"])
    return None


def data_lineage(patches_dir: str | Path, repo_root: str | Path) -> dict[str, str]:
    """``{"data.hash", "data.hash_kind", "data.path", "data.source", "data.n_patches"}``
    for the patch store at ``patches_dir``."""
    patches_dir = Path(patches_dir)
    digest, kind = dvc_lock_hash(patches_dir, repo_root), "dvc"
    if digest is None:
        digest, kind = file_sha256(patches_dir / "index.parquet"), "index-sha256"
    card = json.loads((patches_dir / "card.json").read_text())
    return {
        "data.hash": digest,
        "data.hash_kind": kind,
        "data.path": str(patches_dir),
        "data.source": str(card.get("source", "unknown")),
        "data.n_patches": str(card.get("n_patches", "")),
    }
