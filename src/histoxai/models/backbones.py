"""timm backbones as feature extractors, with pretrained weights from local files only.

Any timm model name works. The backbone is built with ``num_classes=0`` and global average
pooling, so it maps (B, 3, H, W) to (B, ``num_features``). Pretrained weights come from
``pretrained_file`` or from the offline Hugging Face / torch hub caches; nothing is
downloaded, so a missing file is an immediate error instead of a network wait.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import timm
import torch
from safetensors import SafetensorError

from histoxai.errors import InputError, MissingInputError


class PretrainedWeightsError(MissingInputError):
    """Pretrained weights were asked for but are not available offline."""


def create_backbone(
    name: str, pretrained: bool = False, pretrained_file: str | Path = "", output_stride: int = 0
) -> torch.nn.Module:
    """Build timm model ``name`` as a pooled feature extractor.

    Args:
        name: any timm model name (``timm.list_models()``), e.g. ``resnet10t``.
        pretrained: load pretrained weights (from ``pretrained_file`` or the offline cache).
        pretrained_file: a ``.pth``/``.bin``/``.safetensors`` state dict for ``name``.
        output_stride: > 0: timm's ``output_stride`` (8 or 16: the last stages dilate
            instead of downsampling, so their maps stay finer; 0: the model's own, 32).

    Returns:
        The backbone; ``backbone.num_features`` is its output width and
        ``backbone.pretrained_cfg`` holds its input mean/std.

    Raises:
        InputError: ``name`` is not a timm model, it does not take ``output_stride``, or
            the weights file does not load into it.
        PretrainedWeightsError: weights were asked for but are not available offline.
    """
    check_backbone(name)
    kwargs = {"num_classes": 0, "global_pool": "avg"}
    if output_stride:
        kwargs["output_stride"] = output_stride
    if not pretrained:
        return weightless(name, kwargs)
    if output_stride:  # a stride the model lacks is reported as such, never as a weights error
        weightless(name, kwargs)
    weights = Path(pretrained_file) if pretrained_file else cached_weights(name)
    if weights is None:
        raise PretrainedWeightsError(missing_weights_message(name))
    if not weights.is_file():
        raise PretrainedWeightsError(
            f"model.pretrained_file={str(weights)!r} does not exist. " + _HOW_TO.format(name=name)
        )
    try:
        return timm.create_model(
            name, pretrained=True, pretrained_cfg_overlay={"file": str(weights)}, **kwargs
        )
    except (OSError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError, SafetensorError) as err:
        raise InputError(
            f"pretrained weights {str(weights)!r} do not load into timm model {name!r} "
            f"({type(err).__name__}: {str(err)[:300]}); expected a state dict of that model "
            "(.pth/.bin/.safetensors), set by model.pretrained_file or found in the offline cache"
        ) from None


def weightless(name: str, kwargs: dict) -> torch.nn.Module:
    """timm model ``name`` without weights; an ``output_stride`` in ``kwargs`` the model
    does not take is an InputError naming ``model.output_stride``."""
    output_stride = kwargs.get("output_stride", 0)
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except (TypeError, AssertionError, ValueError) as err:
        if not output_stride:
            raise
        raise InputError(
            f"model.output_stride={output_stride}: timm model {name!r} does not take it ({err or type(err).__name__}); "
            "ResNets and EfficientNets take 8 or 16 (0: the model's own)"
        ) from None


def check_backbone(name: str, patch_size: int | None = None) -> None:
    """Raise InputError naming ``model.backbone`` unless ``name`` is a timm model (and,
    with ``patch_size``, one that can process patches of that many pixels).

    Deep backbones downsample by 32 or more; patches smaller than that can shrink to
    nothing inside the network (e.g. ``convnext_atto`` or ``densenet121`` at 16 px).
    """
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0][:6]}*")[:8]
        raise InputError(f"model.backbone={name!r} is not a timm model; similar names: {close}")
    if patch_size is None:
        return
    backbone = create_backbone(name, pretrained=False).eval()
    try:
        with torch.no_grad():
            backbone(torch.zeros(1, 3, patch_size, patch_size))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise InputError(
            f"model.backbone={name!r} does not fit {patch_size} px patches (data.patch_size_px): {first}"
        ) from None


def cached_weights(name: str) -> Path | None:
    """The file of ``name``'s default pretrained weights in the local caches, or None.

    Looks in the Hugging Face hub cache (``HF_HUB_CACHE``/``HF_HOME``) and the torch hub
    checkpoint directory; never touches the network.
    """
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = cfg.hf_hub_id.partition("@")
        for filename in (
            cfg.hf_hub_filename,
            "open_clip_pytorch_model.bin",
            "model.safetensors",
            "pytorch_model.bin",
        ):
            if filename:
                hit = try_to_load_from_cache(repo, filename, revision=revision or None)
                if isinstance(hit, str) and os.path.isfile(hit):
                    return Path(hit)
    if cfg.url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / cfg.url.rsplit("/", 1)[-1]
        if path.is_file():
            return path
    return None


_HOW_TO = (
    "Provide the weights offline: either set model.pretrained_file to a local state dict "
    "(.pth/.bin/.safetensors), or fill the Hugging Face cache on a machine with network access "
    "(`python -c \"import timm; timm.create_model('{name}', pretrained=True)\"`) and copy "
    "~/.cache/huggingface/hub here (or point HF_HUB_CACHE at it); or set model.pretrained=false "
    "to train from scratch."
)


def missing_weights_message(name: str) -> str:
    """The error text for pretrained weights of ``name`` that are not available offline."""
    cfg = timm.models.get_pretrained_cfg(name)
    where = f" (Hugging Face repo {cfg.hf_hub_id})" if cfg is not None and cfg.hf_hub_id else ""
    return (
        f"model.pretrained=true but no pretrained weights for {name!r}{where} are available offline "
        "and histoxai never downloads at run time. " + _HOW_TO.format(name=name)
    )


LAST_CONV = "last_conv"
"""CAM layer alias: the backbone's last convolution with a spatial output (see below)."""

_SHORTCUT = {"downsample", "shortcut"}
_LAST_CONV_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def last_conv_layer(backbone: torch.nn.Module, probe_px: int = 128) -> str:
    """Module path (in ``backbone``) of the last ``Conv2d`` run whose output is spatial.

    This is the layer tf-keras-vis explains when no layer is named (its ``find_layer``
    walks back to the last ``Conv`` layer: Keras' ``top_conv`` in EfficientNetV2), found
    for any timm model by running a ``probe_px`` square zero image through it and
    recording the convolutions in execution order. Convolutions on a 1×1 map (the
    post-pooling ``conv_head`` of MobileNetV3, say) are skipped: a CAM there has one pixel.
    EfficientNetV2-S gives ``conv_head`` (timm's ``bn2`` follows it with BN + SiLU).
    Residual shortcut convolutions (timm names them ``downsample``/``shortcut``) run after
    their block's main branch and are skipped, so ResNets give the last main-branch conv.
    The answer is cached per backbone instance.
    """
    if backbone in _LAST_CONV_CACHE:
        return _LAST_CONV_CACHE[backbone]
    names = {m: n for n, m in backbone.named_modules()}
    seen: list[str] = []

    def hook(module: torch.nn.Module, args: object, output: torch.Tensor) -> None:
        if output.ndim == 4 and output.shape[-1] * output.shape[-2] > 1:
            seen.append(names[module])

    convs = [
        m
        for n, m in backbone.named_modules()
        if isinstance(m, torch.nn.Conv2d) and not _SHORTCUT.intersection(n.split("."))
    ]
    handles = [m.register_forward_hook(hook) for m in convs]
    param = next(backbone.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = backbone.training
    try:
        backbone.eval()
        with torch.no_grad():
            backbone(torch.zeros(1, 3, probe_px, probe_px, device=device))
    finally:
        backbone.train(was_training)
        for h in handles:
            h.remove()
    if not seen:
        raise ValueError(f"{type(backbone).__name__} runs no Conv2d with a spatial output; name a CAM layer")
    _LAST_CONV_CACHE[backbone] = seen[-1]
    return seen[-1]


def stage_layers(model: torch.nn.Module) -> list[str]:
    """Module paths (in ``model``) of the backbone's stage outputs, shallow to deep.

    Read from timm's ``feature_info`` (a list of dicts on a plain model, a
    ``timm.models.FeatureInfo`` on a ``features_only`` one), e.g. for ``resnet10t``
    ``backbone.act1, backbone.layer1, ..., backbone.layer4``.
    """
    backbone = getattr(model, "backbone", model)
    info = getattr(backbone, "feature_info", None)
    if info is None:
        raise ValueError(
            f"{type(backbone).__name__} has no timm feature_info; name its layers by module path instead"
        )
    names = info.module_name() if hasattr(info, "module_name") else [f["module"] for f in info]
    prefix = "backbone." if backbone is not model else ""
    return [prefix + n for n in names]


@contextlib.contextmanager
def capture(modules: Sequence[torch.nn.Module]) -> Iterator[list[torch.Tensor | None]]:
    """Record each module's forward output (with its graph); hooks are removed on exit."""
    outputs: list[torch.Tensor | None] = [None] * len(modules)

    def hook(i: int) -> Callable:
        def store(module: torch.nn.Module, args: object, output: torch.Tensor) -> None:
            outputs[i] = output

        return store

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(modules)]
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()
