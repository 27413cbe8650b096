"""Baselines and ceilings at a map's native resolution.

A Grad-CAM of a 2×2 feature map cannot localise nuclei, and a 2×2 random map is much
"smoother" than pixel noise; comparing either with pixel-level references misleads. So
every method is scored beside two references made at its native resolution (h, w)
and upsampled the way CAMs are (bilinear, half-pixel centres):

- ``random@hxw``: uniform noise drawn at (h, w), upsampled (the chance level);
- ``oracle@hxw``: the signed ground truth average-pooled to (h, w), upsampled (the
  ceiling any map of that resolution can reach),

and its normalised score is (s − random_res) / (oracle_res − random_res).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, h, w) -> (B, H, W) bilinear with half-pixel centres (as ``explain.cams``)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def pool_to(maps: Tensor, res: tuple[int, int]) -> Tensor:
    """Average-pool (B, H, W) to (B, h, w) and upsample back to (B, H, W)."""
    size = tuple(maps.shape[-2:])
    if tuple(res) == size:
        return maps
    return upsample(F.adaptive_avg_pool2d(maps[:, None].float(), res)[:, 0], size)


def smooth_random(shape: tuple[int, int, int], res: tuple[int, int], generator: torch.Generator) -> Tensor:
    """Uniform noise drawn at ``res`` and upsampled to ``shape`` (B, H, W)."""
    noise = torch.rand((shape[0], *res), generator=generator)
    return upsample(noise, tuple(shape[-2:]))


def res_name(kind: str, res: tuple[int, int]) -> str:
    """Row name of a resolution-matched reference (``random@8x8``)."""
    return f"{kind}@{res[0]}x{res[1]}"


def _up_matrix(n_low: int, n_high: int, mode: str) -> Tensor:
    """(n_high, n_low) matrix of 1-D upsampling (bilinear half-pixel, or blocks)."""
    eye = torch.eye(n_low, dtype=torch.float64)[None]  # (1, n_low, n_low): rows are signals
    if mode == "bilinear":
        up = F.interpolate(eye, size=n_high, mode="linear", align_corners=False)
    else:
        up = F.interpolate(eye, size=n_high, mode="nearest")
    return up[0].T  # (n_high, n_low)


def infer_resolution(maps: Tensor, size: tuple[int, int]) -> tuple[int, int]:
    """Native resolution of maps when nothing records it: the coarsest square grid
    (h, w) dividing the patch from which the maps are (nearly) exactly reproduced by
    bilinear (CAMs) or block (occlusion-like) upsampling of a least-squares fit.

    Pixel-level maps come back at the patch size.
    """
    h, w = size
    x = maps[: min(8, len(maps))].double()
    scale = x.abs().amax().clamp_min(1e-12)
    for r in sorted({d for d in range(1, h + 1) if h % d == 0 and w % max(1, d * w // h) == 0}):
        res = (r, max(1, r * w // h))
        if res == (h, w):
            break
        for mode in ("bilinear", "nearest"):
            uh, uw = _up_matrix(res[0], h, mode), _up_matrix(res[1], w, mode)
            low = torch.linalg.pinv(uh) @ x @ torch.linalg.pinv(uw).T
            if ((uh @ low @ uw.T) - x).abs().amax() / scale < 1e-3:
                return res
    return (h, w)


def native_resolution(
    sal, variant: str, method_spec: dict, model, size: tuple[int, int], device
) -> tuple[int, int]:
    """(h, w) of a stored variant: the saliency store's record when it has one, the
    explained layer's spatial size for CAMs, the patch size for pixel methods."""
    if hasattr(sal, "native_resolution"):
        return tuple(int(v) for v in sal.native_resolution(variant))
    method = method_spec.get("method", variant)
    params = method_spec.get("params", {})
    if method in ("gradcam", "gradcampp", "hirescam", "layercam"):
        from histoxai.explain.cams import layer_cams
        from histoxai.explain.scores import SCORES

        layers = list(params.get("layers", [params.get("layer", -1)]))
        with torch.enable_grad():
            cams = layer_cams(
                model, torch.zeros(1, 3, *size, device=device), 0, SCORES["higher"], layers, "gradcam"
            )
        return max((tuple(c.shape[-2:]) for c in cams), key=lambda s: s[0] * s[1])
    if method == "occlusion":
        stride = int(params.get("stride", 1))
        return (max(1, size[0] // stride), max(1, size[1] // stride))
    return tuple(size)
