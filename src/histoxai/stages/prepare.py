"""Build the patch store from the configured source.

Run::

    histoxai prepare                       # phantom (default)
    histoxai prepare --set data.source=micromen --set data.micromen.root=/data/MICROMEN
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from histoxai.config import Config
from histoxai.data.splits import assign_splits
from histoxai.data.store import write_store


def run(cfg: Config, args: argparse.Namespace | None = None) -> Path:
    """Write the patch store to ``base.patches_dir`` and print a summary."""
    splits = partial(assign_splits, cfg=cfg.data.split, seed=cfg.base.seed)
    if cfg.data.source == "phantom":
        from histoxai.data.phantom import generate_phantom, save_montage

        blocks, card = generate_phantom(cfg.data.phantom, cfg.data.patch_size_px, cfg.base.seed)
    else:
        from histoxai.data.micromen import micromen_blocks

        card = {"source": "micromen", "root": cfg.data.micromen.root}
        blocks = micromen_blocks(cfg.data.micromen, cfg.data.patch_size_px, card)
    store = write_store(cfg.base.patches_dir, blocks, card, splits)
    if cfg.data.source == "phantom":
        save_montage(blocks, store.root / "montage.png")
    counts = store.index[f"split_{cfg.data.split.scheme}"].value_counts().to_dict()
    print(
        f"patch store: {store.root} ({len(store)} patches of {store.patch_size} px from "
        f"{len(store.samples)} samples; targets {store.targets}; {cfg.data.split.scheme} split {counts})"
    )
    return store.root
