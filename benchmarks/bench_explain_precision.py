"""How much of a saliency map each storage format keeps: the measurement behind the store's
float16 + per-map power-of-two scale.

Maps of every method are computed in float32 (a trained-shape regressor, random
weights, random patches) and stored as raw float16 (the old store), bfloat16, and float16
divided by a per-map power of two (``histoxai.explain.store.quantise``). Prints, per
method and format: the median and 99.9th percentile of |stored − exact| / |exact| over
non-zero values, the largest error relative to the map's max |value|, and the share of
values that are subnormal or flushed to zero.

Run::

    .venv/bin/python benchmarks/bench_explain_precision.py [--size 64] [--images 16]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from histoxai.config import ModelConfig, VariantConfig
from histoxai.explain.methods import resolve_variants, run_variant
from histoxai.explain.scores import SCORES
from histoxai.explain.store import quantise
from histoxai.models import build_regressor

VARIANTS = [
    "gradcampp",
    "layercam",
    "gradient",
    VariantConfig("smoothgrad", "smoothgrad", {"n": 30, "sigma": 0.2}),
    VariantConfig("integrated_gradients", "integrated_gradients", {"steps": 32}),
    VariantConfig("occlusion", "occlusion", {"window": 16, "stride": 8}),
]


F16_TINY, BF16_TINY = float(np.finfo(np.float16).smallest_normal), float(torch.finfo(torch.bfloat16).tiny)


def formats(m: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Float32 maps as read back from each storage format, and which stored values are
    subnormal or zero."""
    raw16 = m.astype(np.float16)
    bf16 = torch.from_numpy(m).to(torch.bfloat16).float().numpy()
    stored, scale, _ = quantise(m)
    return {
        "float16": (raw16.astype(np.float32), np.abs(raw16) < F16_TINY),
        "bfloat16": (bf16, np.abs(bf16) < BF16_TINY),
        "float16+scale": (stored.astype(np.float32) * scale[:, None, None], np.abs(stored) < F16_TINY),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--backbone", default="resnet10t")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_regressor(
        ModelConfig(backbone=args.backbone, targets=("md", "fa")), [1.0, 0.5], [0.5, 0.2]
    ).eval()
    x = torch.rand(args.images, 3, args.size, args.size)
    head = (
        f"{'variant':<22}{'format':<15}{'median rel':>12}{'p99.9 rel':>12}{'max/peak':>12}{'subn+zero':>11}"
    )
    print(f"{args.backbone} {args.size}px, {args.images} maps per method\n{head}\n" + "-" * len(head))
    for name, variant in resolve_variants(VARIANTS).items():
        exact = run_variant(variant, model, x, 1, SCORES["higher"]).detach().float().numpy()  # FA head
        nz = exact != 0
        peak = np.abs(exact).reshape(len(exact), -1).max(axis=1)[:, None, None]
        for fmt, (back, small) in formats(exact).items():
            rel = np.abs(back - exact)[nz] / np.abs(exact)[nz]
            lost = float(small[nz].mean())
            print(
                f"{name:<22}{fmt:<15}{np.median(rel):>12.2e}{np.quantile(rel, 0.999):>12.2e}"
                f"{(np.abs(back - exact) / peak).max():>12.2e}{lost:>11.4f}"
            )


if __name__ == "__main__":
    main()
