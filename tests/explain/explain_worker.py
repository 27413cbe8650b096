"""One explain worker on a test patch store, for the multi-process and kill tests.

Run::

    python tests/explain/explain_worker.py PATCHES OUT CHUNK [SLOW_S]
    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/explain/explain_worker.py ...
"""

from __future__ import annotations

import os
import sys
import time

import torch

from histoxai.config import VariantConfig
from histoxai.data.store import PatchStore
from histoxai.explain import methods
from histoxai.explain.methods import resolve_variants
from histoxai.explain.runner import explain_patches
from histoxai.training.distributed import group_from_env
from tests.explain.conftest import tiny_regressor


def slow_gradient(model, images, target, score_fn, params, y=None) -> torch.Tensor:
    time.sleep(params["seconds"])
    return methods.gradient(model, images, target, score_fn, {"abs": False}, y)


def main(patches_dir: str, out: str, chunk: str, slow: str = "0") -> None:
    torch.set_num_threads(1)
    methods.METHODS["slow_gradient"] = methods.Method(slow_gradient, {"seconds": 0.0})
    entries = [
        "gradcam",
        VariantConfig("sg", "smoothgrad", {"n": 3, "sigma": 0.2}),
        VariantConfig("ig", "integrated_gradients", {"steps": 4}),
    ]
    if float(slow):
        entries = [VariantConfig("slow", "slow_gradient", {"seconds": float(slow)}), *entries]
    patches = PatchStore(patches_dir)
    explain_patches(
        tiny_regressor(), patches, patches.ids(), out, resolve_variants(entries),
        batch_size=2, chunk_size=int(chunk), device="cpu", seed=5, progress=False,
        group=group_from_env(os.environ),
    )  # fmt: skip


if __name__ == "__main__":
    main(*sys.argv[1:])
