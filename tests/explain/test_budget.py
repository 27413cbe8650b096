"""SmoothGrad and IG split their passes to fit a memory budget by default."""

from __future__ import annotations

import torch

from histoxai.explain import methods
from histoxai.explain.methods import activation_bytes, passes_per_call, resolve_variants, run_variant
from histoxai.explain.scores import SCORES


def test_activation_bytes_scale_with_the_image_area(model):
    small = activation_bytes(model, torch.zeros(2, 3, 32, 32))
    large = activation_bytes(model, torch.zeros(2, 3, 64, 64))
    assert small > 0 and 3.5 < large / small < 4.5


def test_passes_per_call_fill_the_budget_and_never_drop_below_one(model):
    x = torch.zeros(4, 3, 32, 32)
    per_pass = activation_bytes(model, x) * len(x)
    assert passes_per_call(model, x, 30, budget=10 * per_pass) == 10
    assert passes_per_call(model, x, 30, budget=1000 * per_pass) == 30
    assert passes_per_call(model, x, 30, budget=per_pass // 2) == 1


def test_default_smoothgrad_and_ig_forwards_stay_within_the_budget(model, images, monkeypatch):
    x = images[:, :, :32, :32]
    per_image = activation_bytes(model, x)
    monkeypatch.setattr(methods, "CPU_MEMORY_BUDGET", 2 * per_image * len(x))
    seen = []
    hook = model.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    try:
        for name in "smoothgrad", "integrated_gradients":
            seen.clear()
            variant = resolve_variants([name])[name]
            maps = run_variant(variant, model, x, 0, SCORES["higher"])
            assert maps.shape == (3, 32, 32) and torch.isfinite(maps).all()
            assert max(seen) <= 2 * len(x)  # 2 passes per forward, not 30 or 32
    finally:
        hook.remove()
