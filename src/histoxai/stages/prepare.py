"""Build the patch store from the configured source.

Run::

    histoxai prepare                       # phantom (default)
    histoxai prepare --set data.source=micromen --set data.micromen.root=/data/MICROMEN

The store (with ``montage.png`` for the phantom) is written beside the old one and swapped
in whole; a killed run leaves the previous store, and the next run removes its leftovers.
Two runs on one ``base.patches_dir`` are refused (the second fails at once).
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from histoxai.config import Config
from histoxai.data.splits import assign_splits
from histoxai.data.store import PatchStore, write_store
from histoxai.io import atomic_path, clean_leftovers, output_lock


def run(cfg: Config, args: argparse.Namespace | None = None) -> Path:
    """Write the patch store to ``base.patches_dir`` and print a summary."""
    splits = partial(assign_splits, cfg=cfg.data.split, seed=cfg.base.seed)
    root = Path(cfg.base.patches_dir)
    with output_lock(root):
        clean_leftovers(root)
        if cfg.data.source == "phantom":
            from histoxai.data.phantom import generate_phantom, save_montage

            blocks, card = generate_phantom(cfg.data.phantom, cfg.data.patch_size_px, cfg.base.seed)
        else:
            from histoxai.data.micromen import micromen_blocks

            card = {"source": "micromen", "root": cfg.data.micromen.root}
            blocks = micromen_blocks(cfg.data.micromen, cfg.data.patch_size_px, card)
        with atomic_path(root) as tmp:  # the montage goes in before the swap
            write_store(tmp, blocks, card, splits)
            if cfg.data.source == "phantom":
                save_montage(blocks, tmp / "montage.png")
    store = PatchStore(root)
    counts = store.index[f"split_{cfg.data.split.scheme}"].value_counts().to_dict()
    print(
        f"patch store: {store.root} ({len(store)} patches of {store.patch_size} px from "
        f"{len(store.samples)} samples; targets {store.targets}; {cfg.data.split.scheme} split {counts})"
    )
    return store.root
