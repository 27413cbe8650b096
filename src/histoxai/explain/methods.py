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
                   range = 1 for [0, 1] inputs (Smilkov 2017), captum NoiseTunnel
integrated_grad..  Σ_c (x − x')_c ∫ ∂s/∂x_c dα (Sundararajan 2017), captum          yes
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

import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Occlusion, Saliency
from torch import Tensor, nn

from histoxai.explain.cams import layer_cams, upsample
from histoxai.explain.scores import ScoreFn, head_score

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
    tunnel = NoiseTunnel(Saliency(head_score(model, target, score_fn)))
    attr = tunnel.attribute(
        images,
        nt_type="smoothgrad",
        nt_samples=n,
        nt_samples_batch_size=min(n, int(params["noise_batch"]) or passes_per_call(model, images, n)),
        stdevs=float(params["sigma"]) * INPUT_RANGE,
        abs=bool(params["abs"]),
        additional_forward_args=_forward_args(y),
    )
    return _reduce_channels(attr, bool(params["abs"]))


def integrated_gradients(model, images, target, score_fn, params, y=None) -> Tensor:
    steps = int(params["steps"])
    ig = IntegratedGradients(head_score(model, target, score_fn))
    attr = ig.attribute(
        images,
        baselines=float(params["baseline"]),
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


METHODS: dict[str, Method] = {
    "gradcam": Method(_cam("gradcam"), {"layer": -1, "relu": True}),
    "gradcampp": Method(_cam("gradcampp"), {"layer": -1, "relu": True}),
    "hirescam": Method(_cam("hirescam"), {"layer": -1, "relu": False}),
    "layercam": Method(layercam, {"layers": (-3, -2, -1), "gamma": 2.0}),
    "gradient": Method(gradient, {"abs": False}),
    "smoothgrad": Method(smoothgrad, {"sigma": 0.2, "n": 30, "noise_batch": 0, "abs": False}),
    "integrated_gradients": Method(integrated_gradients, {"steps": 32, "baseline": 0.0, "step_batch": 0}),
    "occlusion": Method(occlusion, {"window": 8, "stride": 4, "baseline": 0.0, "window_batch": 16}),
}
"""Method name -> adapter and default parameters (``noise_batch``/``step_batch`` 0: as many
copies/steps per forward as fit :func:`memory_budget`, see :func:`passes_per_call`)."""


# --------------------------------------------------------------------------- variants


def method_params(method: str, params: Mapping[str, Any] | None = None, where: str = "") -> dict[str, Any]:
    """``params`` of ``method`` with defaults filled in, checked against the defaults' types."""
    if method not in METHODS:
        raise ValueError(f"{where}unknown saliency method {method!r}; expected one of {sorted(METHODS)}")
    defaults = METHODS[method].defaults
    out = dict(defaults)
    for key, value in (params or {}).items():
        if key not in defaults:
            raise ValueError(
                f"{where}unknown parameter {key!r} of method {method!r}; expected one of {sorted(defaults)}"
            )
        if key == "layer" and isinstance(value, str):
            out[key] = value  # a module path instead of a stage index
        else:
            out[key] = _like(defaults[key], value, f"{where}{method}.{key}")
    return out


def _like(default: Any, value: Any, key: str) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{key}={value!r}: expected true or false")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}={value!r}: expected a list")
        return tuple(value)
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key}={value!r}: expected a number")
        if isinstance(default, int) and value != int(value):
            raise ValueError(f"{key}={value!r}: expected an integer")
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
            raise ValueError(f"{where}a variant name must be non-empty without '__' or '/'")
        if name in out:
            raise ValueError(f"{where}variant {name!r} is listed twice")
        full = method_params(method, params, where)
        out[name] = {
            "method": method,
            "params": {k: list(v) if isinstance(v, tuple) else v for k, v in full.items()},
        }
    if not out:
        raise ValueError("explain.methods: expected at least one saliency method")
    return out


def run_variant(
    variant: Mapping[str, Any],
    model: nn.Module,
    images: Tensor,
    target: int,
    score_fn: ScoreFn,
    y: Tensor | None = None,
) -> Tensor:
    """Maps (B, H, W) of one resolved variant (see :func:`resolve_variants`)."""
    method = variant["method"]
    params = method_params(method, variant.get("params"))
    return METHODS[method].fn(model, images, target, score_fn, params, y)
