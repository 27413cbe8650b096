"""Saliency methods behind one contract, and their named parameter variants.

Every method is a small adapter::

    method(model, images, target, score_fn, params, y=None) -> maps

with ``images`` (B, 3, H, W) float in [0, 1] on the model's device, ``target`` the
output column (head) explained, ``score_fn`` a regression score function
(``histoxai.explain.scores``), ``params`` the variant's parameters (defaults filled in)
and ``y`` (B,) the measured values (for ``score_fn='target'``). Maps are float32
(B, H, W), raw: signed unless the method's definition includes a ReLU, never min–max
scaled. Whole batches go through each call; autocast is the caller's choice.

=================  ===========================================================  ======
method             map                                                          signed
=================  ===========================================================  ======
gradcam            ReLU(Σ_k α_k A^k) (Selvaraju 2017 eq. 1-2; ``relu: false``     no
                   keeps the sign)
gradcampp          ReLU(Σ_k w_k A^k), w from Chattopadhay 2018 eq. 19              no
hirescam           Σ_k ∂s/∂A^k ⊙ A^k (Draelos & Carin 2020)                        yes
layercam           max over layers of ReLU(Σ_k ReLU(∂s/∂A^k) ⊙ A^k) (Jiang 2021    no
                   eq. 4-5), each layer's map first scaled by tanh(γ M / max M)
                   (their eq. 6; ``gamma: 0`` fuses the raw maps)
gradient           Σ_c ∂s/∂x_c (Simonyan 2014; ``abs: true``: max_c |∂s/∂x_c|)     yes
smoothgrad         gradient averaged over n copies of x + N(0, (σ · range)²),       yes
                   range = 1 for [0, 1] inputs (Smilkov 2017), captum NoiseTunnel;
                   ``sigma_relative``: range = max − min of each image; ``abs``
                   + ``reduce: max``: mean |∂| per copy, max over RGB (tf-keras-vis,
                   the thesis' form)
integrated_grad..  Σ_c (x − x')_c ∫ ∂s/∂x_c dα (Sundararajan 2017), captum;         yes
                   x' constant ``baseline`` or x blurred (``blur_sigma_px`` > 0)
deeplift           Σ_c DeepLIFT rescale (Shrikumar 2017) against x' as above        yes
gradient_shap      Σ_c expected gradients (Lundberg & Lee 2017) against the         yes
                   batch's blurred images, n draws with input noise σ
occlusion          mean_c of s(x) − s(x with a window set to ``baseline``) over     yes
                   the windows covering a pixel (Zeiler & Fergus 2014), captum
=================  ===========================================================  ======

Adding a method is one entry in :data:`METHODS`. A *variant* is a method with
parameters under a name (``smoothgrad_s0.3``); ``explain.methods`` in ``params.yaml``
lists variants, either as a method name (its defaults) or as
``{name, method, params}``::

    explain:
      methods:
        - gradcampp
        - {name: layercam, params: {layers: [-3, -2, -1]}}
        - {name: smoothgrad_s0.3, method: smoothgrad, params: {sigma: 0.3, n: 30}}
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import DeepLift, GradientShap, IntegratedGradients, NoiseTunnel, Occlusion, Saliency
from torch import Tensor, nn

from histoxai.config import ConfigError
from histoxai.explain.cams import layer_cams, resolve_layer, upsample
from histoxai.explain.scores import ScoreFn, head_score
from histoxai.models.backbones import capture

INPUT_RANGE = 1.0
"""x_max − x_min of the model's inputs ([0, 1] RGB): SmoothGrad's σ is relative to it."""


@dataclass(frozen=True)
class Method:
    """A registry entry: the adapter and its parameters' defaults (which fix their types)."""

    fn: Callable[..., Tensor]
    defaults: Mapping[str, Any]


def _forward_args(y: Tensor | None) -> tuple | None:
    return None if y is None else (y,)


def _reduce_channels(attr: Tensor, absolute: bool) -> Tensor:
    # (B, 3, H, W) -> (B, H, W): signed maps sum over RGB (the derivative along a
    # brightness change); absolute ones take the max over channels (Simonyan 2014).
    return attr.abs().amax(dim=1) if absolute else attr.sum(dim=1)


def _noise_frame(forward, images: Tensor, params, y: Tensor | None):
    """SmoothGrad's noise frame: ``(forward, inputs, additional args, scale)``.

    ``sigma_relative: false`` draws noise N(0, (σ · INPUT_RANGE)²) on the images
    (Smilkov 2017 on [0, 1] inputs). ``true`` uses σ · (max x − min x) of each image, as
    tf-keras-vis' ``Saliency(smooth_noise=σ)`` the thesis used: the images are divided by
    their range r (B, 1, 1, 1), so captum's fixed σ is σ·r in image units, the forward
    multiplies r back, and ∂s/∂x = (∂s/∂x') / r (r > 0 keeps |·| intact).
    """
    if not params["sigma_relative"]:
        return forward, images, _forward_args(y), 1.0
    flat = images.detach().flatten(1)
    r = (flat.amax(1) - flat.amin(1)).clamp(min=1e-6).view(-1, 1, 1, 1) / INPUT_RANGE

    def scaled(x: Tensor, r: Tensor, y: Tensor | None = None) -> Tensor:
        return forward(x * r, y)

    return scaled, images / r, (r,) if y is None else (r, y), r


def _smoothgrad_channels(attr: Tensor, params) -> Tensor:
    # (B, 3, H, W) -> (B, H, W). ``reduce: auto`` keeps the gradient method's rule (max
    # of |∂| with ``abs``, else the signed sum); ``max`` with ``abs: true`` is
    # tf-keras-vis' ``keepdims=False`` (the thesis' maps): mean over copies of |∂| per
    # channel, then the channel maximum.
    reduce = params["reduce"]
    if reduce == "auto":
        return _reduce_channels(attr, bool(params["abs"]))
    if reduce == "sum":
        return attr.sum(dim=1)
    if reduce == "max":
        return attr.amax(dim=1)
    raise ValueError(f"smoothgrad.reduce={reduce!r}: expected one of ['auto', 'max', 'sum']")


# --------------------------------------------------------------------------- CAMs


def _cam(rule: str):
    def method(model, images, target, score_fn, params, y=None) -> Tensor:
        (cam,) = layer_cams(model, images, target, score_fn, [params["layer"]], rule, y)
        if params["relu"]:
            cam = cam.clamp(min=0)
        return upsample(cam, tuple(images.shape[-2:]))

    method.__name__ = rule
    return method


def layercam(model, images, target, score_fn, params, y=None) -> Tensor:
    size = tuple(images.shape[-2:])
    cams = layer_cams(model, images, target, score_fn, list(params["layers"]), "layercam", y)
    fused = None
    for cam in cams:
        cam = cam.clamp(min=0)  # eq. 5
        if params["gamma"] > 0:
            # eq. 6: tanh(γ M / max M) per image, so shallow layers' small values count.
            peak = cam.amax(dim=(1, 2), keepdim=True)
            cam = torch.where(peak > 0, torch.tanh(params["gamma"] * cam / peak.clamp(min=1e-12)), 0.0)
        cam = upsample(cam, size)
        fused = cam if fused is None else torch.maximum(fused, cam)  # element-wise max fusion
    return fused


# --------------------------------------------------------------------------- memory budget

CPU_MEMORY_BUDGET = 256 * 2**20
"""Bytes of activations one call may hold on CPU: small enough to stay cache-friendly
(``benchmarks/bench_explain.py`` measures SmoothGrad and IG against their floor)."""
_ACTIVATIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def memory_budget(device: torch.device) -> int:
    """Bytes of activations a call may hold: half the free memory of a CUDA device (the
    rest for the allocator, cudnn workspaces and the gradients), else a fixed CPU budget."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free // 2)
    return CPU_MEMORY_BUDGET


def activation_bytes(model: nn.Module, images: Tensor) -> int:
    """Bytes one image's forward keeps for its backward: twice the outputs of the leaf
    modules (inputs saved for backward), measured once per model, input shape and autocast."""
    fast = (
        torch.get_autocast_dtype(images.device.type)
        if torch.is_autocast_enabled(images.device.type)
        else None
    )
    key = (tuple(images.shape[1:]), images.dtype, images.device.type, fast)
    cache = _ACTIVATIONS.setdefault(model, {})
    if key not in cache:
        total = [0]

        def count(module: nn.Module, args: object, output: object) -> None:
            if isinstance(output, Tensor):
                total[0] += output.numel() * output.element_size()

        leaves = [m for m in model.modules() if not any(True for _ in m.children())]
        handles = [m.register_forward_hook(count) for m in leaves]
        try:
            with torch.enable_grad():
                model(images[:1].detach().requires_grad_(True))
        finally:
            for h in handles:
                h.remove()
        cache[key] = 2 * total[0]
    return cache[key]


def passes_per_call(model: nn.Module, images: Tensor, passes: int, budget: int | None = None) -> int:
    """How many of a batch's ``passes`` (noise copies, integration steps) one forward may
    hold within ``budget`` bytes (default :func:`memory_budget`); at least 1."""
    budget = memory_budget(images.device) if budget is None else budget
    per_pass = activation_bytes(model, images) * len(images)
    return max(1, min(passes, budget // max(per_pass, 1)))


# --------------------------------------------------------------------------- input attributions


def gradient(model, images, target, score_fn, params, y=None) -> Tensor:
    sal = Saliency(head_score(model, target, score_fn))
    x = images.detach().requires_grad_(True)  # a leaf that asks for its gradient (captum warns otherwise)
    attr = sal.attribute(x, abs=bool(params["abs"]), additional_forward_args=_forward_args(y))
    return _reduce_channels(attr, bool(params["abs"]))


def smoothgrad(model, images, target, score_fn, params, y=None) -> Tensor:
    n = int(params["n"])
    forward, inputs, extra, scale = _noise_frame(head_score(model, target, score_fn), images, params, y)
    tunnel = NoiseTunnel(Saliency(forward))
    attr = tunnel.attribute(
        inputs,
        nt_type="smoothgrad",
        nt_samples=n,
        nt_samples_batch_size=min(n, int(params["noise_batch"]) or passes_per_call(model, images, n)),
        stdevs=float(params["sigma"]) * INPUT_RANGE,
        abs=bool(params["abs"]),
        additional_forward_args=extra,
    )
    return _smoothgrad_channels(attr / scale, params)


def integrated_gradients(model, images, target, score_fn, params, y=None) -> Tensor:
    steps = int(params["steps"])
    ig = IntegratedGradients(head_score(model, target, score_fn))
    attr = ig.attribute(
        images,
        baselines=reference(images, params),
        additional_forward_args=_forward_args(y),
        n_steps=steps,
        internal_batch_size=len(images)
        * min(steps, int(params["step_batch"]) or passes_per_call(model, images, steps)),
    )
    return attr.sum(dim=1)  # completeness: Σ map = s(x) − s(x') up to the integral's error


def occlusion(model, images, target, score_fn, params, y=None) -> Tensor:
    window, stride = int(params["window"]), int(params["stride"])
    attr = Occlusion(head_score(model, target, score_fn)).attribute(
        images,
        sliding_window_shapes=(images.shape[1], window, window),
        strides=(images.shape[1], stride, stride),
        baselines=float(params["baseline"]),
        additional_forward_args=_forward_args(y),
        perturbations_per_eval=max(1, int(params["window_batch"])),
    )
    return attr.mean(dim=1)


# --------------------------------------------------------------------------- references (issue 10 item 7)


def blur(images: Tensor, sigma_px: float) -> Tensor:
    """(B, 3, H, W) Gaussian blur with σ ``sigma_px`` px (reflected borders, kernel ±3σ)."""
    if sigma_px <= 0:
        return images
    radius = max(1, int(round(3 * sigma_px)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=images.device)
    k = torch.exp(-0.5 * (t / sigma_px) ** 2)
    k = (k / k.sum()).to(images.dtype)
    c = images.shape[1]
    pad = min(radius, images.shape[-1] - 1, images.shape[-2] - 1)
    k = k[radius - pad : radius + pad + 1]
    x = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def reference(images: Tensor, params) -> Tensor | float:
    """The attribution reference x': the image blurred with ``blur_sigma_px`` (> 0; the
    blurred baseline of Sturmfels et al. 2020, *Visualizing the impact of feature
    attribution baselines*, Distill) or the constant ``baseline`` (``blur_sigma_px: 0``)."""
    sigma = float(params.get("blur_sigma_px", 0.0))
    return blur(images.detach(), sigma) if sigma > 0 else float(params["baseline"])


class _Score(nn.Module):
    """A regression score of one head as an ``nn.Module`` (DeepLIFT hooks modules)."""

    def __init__(self, model: nn.Module, target: int, score_fn: ScoreFn):
        super().__init__()
        self.model, self.target, self.score_fn = model, target, score_fn

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.score_fn(self.model(x)[:, self.target].float(), y)


def deeplift(model, images, target, score_fn, params, y=None) -> Tensor:
    # Shrikumar et al. 2017, rescale rule, captum DeepLift: Σ map = s(x) − s(x') for
    # networks of ReLU-like modules (SiLU and functional activations pass gradients).
    attr = DeepLift(_Score(model, target, score_fn)).attribute(
        images.detach().requires_grad_(True),
        baselines=reference(images, params),
        additional_forward_args=_forward_args(y),
    )
    return attr.sum(dim=1)


def gradient_shap(model, images, target, score_fn, params, y=None) -> Tensor:
    # Lundberg & Lee 2017 (expected gradients): references drawn from the blurred
    # images of the batch, n samples per image with input noise σ (captum GradientShap).
    refs = blur(images.detach(), float(params["blur_sigma_px"]))
    # captum draws the path positions α with NumPy's global RNG: seed it from torch's, so
    # the runner's per-pair torch seed makes the maps reproducible (resume gives the same).
    np.random.seed(int(torch.randint(0, 2**31 - 1, (1,))))  # noqa: NPY002 (captum reads the global RNG)
    attr = GradientShap(head_score(model, target, score_fn)).attribute(
        images,
        baselines=refs,
        n_samples=int(params["n"]),
        stdevs=float(params["sigma"]) * INPUT_RANGE,
        additional_forward_args=_forward_args(y),
    )
    return attr.sum(dim=1)


METHODS: dict[str, Method] = {
    "gradcam": Method(_cam("gradcam"), {"layer": -1, "relu": True}),
    "gradcampp": Method(_cam("gradcampp"), {"layer": -1, "relu": True}),
    "hirescam": Method(_cam("hirescam"), {"layer": -1, "relu": False}),
    "layercam": Method(layercam, {"layers": (-3, -2, -1), "gamma": 2.0}),
    "gradient": Method(gradient, {"abs": False}),
    "smoothgrad": Method(
        smoothgrad,
        {"sigma": 0.2, "n": 30, "noise_batch": 0, "abs": False, "reduce": "auto", "sigma_relative": False},
    ),
    "integrated_gradients": Method(
        integrated_gradients, {"steps": 32, "baseline": 0.0, "step_batch": 0, "blur_sigma_px": 0.0}
    ),
    "deeplift": Method(deeplift, {"baseline": 0.0, "blur_sigma_px": 5.0}),
    "gradient_shap": Method(gradient_shap, {"n": 16, "sigma": 0.0, "blur_sigma_px": 5.0}),
    "occlusion": Method(occlusion, {"window": 8, "stride": 4, "baseline": 0.0, "window_batch": 16}),
}
"""Method name -> adapter and default parameters (``noise_batch``/``step_batch`` 0: as many
copies/steps per forward as fit :func:`memory_budget`, see :func:`passes_per_call`)."""

CAM_METHODS: tuple[str, ...] = ("gradcam", "gradcampp", "hirescam", "layercam")


def native_resolution(model: nn.Module, patch_size: int, variant: Mapping[str, Any]) -> tuple[int, int]:
    """(h, w) of a variant's map before upsampling to ``patch_size`` px.

    CAMs: the explained layer's output size on a ``patch_size`` input (LayerCAM: its
    finest layer, the highest resolution any fused map has). Occlusion: the number of
    window positions per axis. Pixel methods: the patch size.

    Args:
        model: the regressor (its backbone is probed with one zero image, no gradients).
        patch_size: side of the explained patches in px.
        variant: ``{"method", "params"}`` as :func:`resolve_variants` gives.
    """
    method = variant["method"]
    params = method_params(method, variant.get("params"))
    if method == "occlusion":
        n = max(1, -(-(patch_size - int(params["window"])) // int(params["stride"])) + 1)
        return (n, n)
    if method not in CAM_METHODS:
        return (patch_size, patch_size)
    layers = list(params["layers"]) if method == "layercam" else [params["layer"]]
    modules = [resolve_layer(model, layer)[1] for layer in layers]
    device = next(model.parameters()).device
    with capture(modules) as acts, torch.no_grad():
        model(torch.zeros(1, 3, patch_size, patch_size, device=device))
    sizes = [tuple(int(v) for v in a.shape[-2:]) for a in acts if a is not None]
    return max(sizes, key=lambda hw: hw[0] * hw[1])


# --------------------------------------------------------------------------- variants


_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {("smoothgrad", "reduce"): ("auto", "sum", "max")}


def method_params(method: str, params: Mapping[str, Any] | None = None, where: str = "") -> dict[str, Any]:
    """``params`` of ``method`` with defaults filled in, checked against the defaults' types."""
    if method not in METHODS:
        raise ConfigError(f"{where}unknown saliency method {method!r}; expected one of {sorted(METHODS)}")
    defaults = METHODS[method].defaults
    out = dict(defaults)
    for key, value in (params or {}).items():
        if key not in defaults:
            raise ConfigError(
                f"{where}unknown parameter {key!r} of method {method!r}; expected one of {sorted(defaults)}"
            )
        if (method, key) in _CHOICES and value not in _CHOICES[method, key]:
            raise ConfigError(
                f"{where}{method}.{key}={value!r}: expected one of {list(_CHOICES[method, key])}"
            )
        if key == "layer" and isinstance(value, str):
            out[key] = value  # a module path instead of a stage index
        else:
            out[key] = _like(defaults[key], value, f"{where}{method}.{key}")
    return out


def _like(default: Any, value: Any, key: str) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected true or false")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: expected a list")
        return tuple(value)
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value!r}: expected a number")
        if isinstance(default, int) and value != int(value):
            raise ConfigError(f"{key}={value!r}: expected an integer")
        return type(default)(value)
    return value


def resolve_variants(entries: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """Variant name -> ``{"method", "params"}`` (all parameters, JSON-friendly).

    Args:
        entries: method names (a variant with the method's defaults) or objects with
            ``name``, ``method`` (empty: same as ``name``) and ``params``
            (``histoxai.config.VariantConfig``).
    """
    out: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            name, method, params = entry, entry, {}
        else:
            name, method, params = entry.name, entry.method or entry.name, entry.params
        where = f"explain.methods[{i}] ({name!r}): "
        if not name or "__" in name or "/" in name:
            raise ConfigError(f"{where}a variant name must be non-empty without '__' or '/'")
        if name in out:
            raise ConfigError(f"{where}variant {name!r} is listed twice")
        full = method_params(method, params, where)
        out[name] = {
            "method": method,
            "params": {k: list(v) if isinstance(v, tuple) else v for k, v in full.items()},
        }
    if not out:
        raise ConfigError("explain.methods: expected at least one saliency method")
    return out


def run_variant(
    variant: Mapping[str, Any],
    model: nn.Module,
    images: Tensor,
    target: int,
    score_fn: ScoreFn,
    y: Tensor | None = None,
) -> Tensor:
    """Maps (B, H, W) of one resolved variant (see :func:`resolve_variants`), detached
    from autograd (captum's DeepLift returns attributions that still require grad)."""
    method = variant["method"]
    params = method_params(method, variant.get("params"))
    return METHODS[method].fn(model, images, target, score_fn, params, y).detach()
