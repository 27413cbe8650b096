"""Class-activation maps computed in torch on the model's device.

pytorch-grad-cam is the reference for these formulas but cannot be used as is for a
regressor: it applies ReLU and per-image min–max scaling inside its CAM computation
with no switch (its issues #267, #214), picks the argmax output when no target is given
(#410) and moves activations to CPU numpy per batch (#356). Here one forward pass
captures the activations A (B, K, h, w) of the chosen layers, one ``autograd.grad``
call gives G = ∂s/∂A, and each rule below turns (A, G) into a raw (B, h, w) map, in
float32, before any ReLU. Whether a ReLU follows is the method's choice
(see ``histoxai.explain.methods``); min–max scaling is left to display.

Layers are named by module path in the model (``backbone.layer4``), by path in the
backbone (``layer4``) or by index into the backbone's stage outputs (``-1`` is the
deepest), found generically from timm's ``feature_info``, or ``last_conv``: the
backbone's last convolution with a spatial output (``histoxai.models.backbones.last_conv_layer``;
``conv_head`` in EfficientNetV2, Keras' ``top_conv``, the layer tf-keras-vis explains).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from histoxai.explain.scores import ScoreFn
from histoxai.models.backbones import LAST_CONV, capture, last_conv_layer, stage_layers

Layer = int | str

_EPS = 1e-6  # as pytorch-grad-cam's GradCAMPlusPlus, so the two agree


def resolve_layer(model: nn.Module, layer: Layer) -> tuple[str, nn.Module]:
    """(module path, module) of a layer given by stage index, module path or ``last_conv``."""
    if layer == LAST_CONV:
        backbone = getattr(model, "backbone", model)
        path = last_conv_layer(backbone)
        layer = f"backbone.{path}" if backbone is not model else path
    if isinstance(layer, int) or (isinstance(layer, str) and layer.lstrip("-").isdigit()):
        stages = stage_layers(model)
        i = int(layer)
        if not -len(stages) <= i < len(stages):
            raise ValueError(f"CAM layer {layer}: the backbone has {len(stages)} stages {stages}")
        layer = stages[i]
    for path in (layer, f"backbone.{layer}"):
        try:
            return path, model.get_submodule(path)
        except AttributeError:
            continue
    raise ValueError(
        f"CAM layer {layer!r} is not a module of the model; stage outputs are {stage_layers(model)}"
    )


# --------------------------------------------------------------------------- rules
# Each rule: activations A (B, K, h, w), gradients G = ∂s/∂A (B, K, h, w) -> (B, h, w).


def gradcam_rule(A: Tensor, G: Tensor) -> Tensor:
    # Selvaraju et al. 2017, eq. 1: α_k = 1/Z Σ_ij ∂s/∂A^k_ij; eq. 2 without its ReLU.
    alpha = G.mean(dim=(2, 3), keepdim=True)  # (B, K, 1, 1)
    return (alpha * A).sum(dim=1)


def gradcampp_rule(A: Tensor, G: Tensor) -> Tensor:
    # Chattopadhay et al. 2018, eq. 19 with s = exp(score), whose higher derivatives are
    # powers of the first (eq. 18): a^k_ij = g² / (2 g² + Σ_ab A^k_ab g³), and
    # w_k = Σ_ij a^k_ij ReLU(g_ij) (eq. 7-9); a is zeroed where g == 0, as pytorch-grad-cam.
    g2 = G * G
    g3 = g2 * G
    sum_a = A.sum(dim=(2, 3), keepdim=True)  # (B, K, 1, 1)
    a = g2 / (2 * g2 + sum_a * g3 + _EPS)
    a = torch.where(G != 0, a, torch.zeros_like(a))
    w = (a * G.clamp(min=0)).sum(dim=(2, 3), keepdim=True)  # (B, K, 1, 1)
    return (w * A).sum(dim=1)


def layercam_rule(A: Tensor, G: Tensor) -> Tensor:
    # Jiang et al. 2021, eq. 4: w^k_ij = ReLU(g^k_ij); eq. 5 (before its ReLU): Σ_k w^k_ij A^k_ij.
    return (G.clamp(min=0) * A).sum(dim=1)


def hirescam_rule(A: Tensor, G: Tensor) -> Tensor:
    # Draelos & Carin 2020, HiResCAM: Σ_k (∂s/∂A^k ⊙ A^k), element-wise, no averaging.
    return (G * A).sum(dim=1)


RULES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "gradcam": gradcam_rule,
    "gradcampp": gradcampp_rule,
    "layercam": layercam_rule,
    "hirescam": hirescam_rule,
}


def layer_cams(
    model: nn.Module,
    images: Tensor,
    target: int,
    score_fn: ScoreFn,
    layers: Sequence[Layer],
    rule: str,
    y: Tensor | None = None,
) -> list[Tensor]:
    """Raw CAMs of ``rule`` at each layer from one forward and one backward pass.

    Args:
        model: the regressor (eval mode).
        images: (B, 3, H, W) float in [0, 1] on the model's device.
        target: output column (head) to explain.
        score_fn: regression score function (``histoxai.explain.scores``).
        layers: layers by stage index or module path.
        rule: key of :data:`RULES`.
        y: (B,) measured values for scores that need them.

    Returns:
        One float32 (B, h_l, w_l) map per layer, at the layer's resolution, before ReLU.
    """
    modules = [resolve_layer(model, layer)[1] for layer in layers]
    with capture(modules) as acts, torch.enable_grad():
        # Requiring the input gradient keeps a graph even when the weights are frozen;
        # autograd.grad below only walks back as far as the captured activations.
        x = images.detach().requires_grad_(True)
        score = score_fn(model(x)[:, target].float(), y)
    if any(a is None for a in acts):
        raise ValueError(f"CAM layers {list(layers)}: a layer was not used in the forward pass")
    grads = torch.autograd.grad(score.sum(), acts)  # samples are independent: Σ_b ∂s_b/∂A_b
    return [RULES[rule](a.detach().float(), g.float()) for a, g in zip(acts, grads)]


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, h, w) -> (B, H, W) bilinear (half-pixel centres, as OpenCV's resize)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
