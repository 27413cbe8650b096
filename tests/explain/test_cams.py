"""Torch CAMs agree with pytorch-grad-cam once its ReLU and min–max scaling are applied."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM

from histoxai.explain.cams import layer_cams, resolve_layer, upsample
from histoxai.explain.scores import SCORES
from histoxai.models.backbones import stage_layers

LIBRARY = {"gradcam": GradCAM, "gradcampp": GradCAMPlusPlus, "layercam": LayerCAM, "hirescam": HiResCAM}


class HeadTarget:
    """pytorch-grad-cam target: the head's output (it is called per sample, output (T,))."""

    def __init__(self, head: int):
        self.head = head

    def __call__(self, output):
        return output[..., self.head]


def min_max(cam: torch.Tensor) -> torch.Tensor:
    flat = cam.flatten(1)
    lo, hi = flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]
    return (cam - lo) / (1e-7 + (hi - lo))


def library_scaling(cam: torch.Tensor, size) -> np.ndarray:
    # What pytorch-grad-cam does to a single-layer map: ReLU, per-image min–max, resize,
    # then (aggregating over its one layer) min–max again.
    return min_max(upsample(min_max(cam.clamp(min=0)), size)).numpy()


class NegHeadTarget(HeadTarget):
    def __call__(self, output):
        return -output[..., self.head]


@pytest.mark.parametrize("rule", sorted(LIBRARY))
@pytest.mark.parametrize("layer, head", [(-1, 0), (-2, 1)])
def test_cam_matches_pytorch_grad_cam(model, images, rule, layer, head):
    _, module = resolve_layer(model, layer)
    peak = 0.0
    for score, lib_target in (("higher", HeadTarget(head)), ("lower", NegHeadTarget(head))):
        (cam,) = layer_cams(model, images, head, SCORES[score], [layer], rule)
        with LIBRARY[rule](model, [module]) as lib:
            expected = lib(images, targets=[lib_target] * len(images))
        got = library_scaling(cam, images.shape[-2:])
        assert got.shape == expected.shape == (len(images), *images.shape[-2:])
        np.testing.assert_allclose(got, expected, atol=2e-4)
        peak = max(peak, expected.max())
    assert peak > 0.5  # the maps compared were not all blank


def test_stage_layers_come_from_timm_feature_info(model):
    assert stage_layers(model) == [f"backbone.{m}" for m in ("act1", "layer1", "layer2", "layer3", "layer4")]
    assert resolve_layer(model, -1)[0] == "backbone.layer4"
    assert resolve_layer(model, "layer3")[0] == "backbone.layer3"
    with pytest.raises(ValueError, match="not a module"):
        resolve_layer(model, "layer9")
    with pytest.raises(ValueError, match="5 stages"):
        resolve_layer(model, 7)


def test_hooks_are_released(model, images):
    layer_cams(model, images, 0, SCORES["higher"], [-3, -2, -1], "gradcam")
    assert all(not m._forward_hooks for m in model.modules())


def test_cams_are_per_image_in_a_batch(model, images):
    (batched,) = layer_cams(model, images, 0, SCORES["higher"], [-1], "gradcampp")
    single = torch.cat(
        [layer_cams(model, images[i : i + 1], 0, SCORES["higher"], [-1], "gradcampp")[0] for i in range(3)]
    )
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-6)
