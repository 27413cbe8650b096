"""Saliency throughput per method against its floor and against per-image library use.

- **floor**: the best images/s of one forward + backward (to the input) over batch
  sizes, divided by the passes the method needs (CAMs and the gradient 1, SmoothGrad
  n, integrated gradients its steps, occlusion its windows as forward passes only).
- **ours**: ``histoxai.explain.methods.run_variant`` on whole batches, as the runner
  calls it (autocast bf16 on CUDA), at the floor's best batch size; the multi-pass
  methods batch their passes (``noise_batch``/``step_batch``/``window_batch``) so that
  one call's forward batch is about the best batch.
- **per image**: straightforward library use one image at a time, fp32:
  pytorch-grad-cam (``GradCAM(model, [layer])(x[i:i+1], targets)``) for the CAMs,
  captum (``NoiseTunnel(Saliency)``, ``IntegratedGradients``, ``Occlusion``,
  ``Saliency``) for the rest.

- **default**: the variant as configured (``noise_batch``/``step_batch`` 0: passes per
  forward sized from the memory budget, ``histoxai.explain.methods.passes_per_call``) at
  the runner's default batch (``--default-batch``, ``explain.batch_size``).

Prints maps/s, ``ours/floor`` and ``default/floor`` (time over the floor's; aim <= 1.2).

Run::

    .venv/bin/python benchmarks/bench_explain.py [--device cuda] [--size 64] [--images 64]
"""

from __future__ import annotations

import argparse
import time

import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Occlusion, Saliency
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM

from histoxai.config import ModelConfig, VariantConfig
from histoxai.explain.cams import resolve_layer
from histoxai.explain.methods import resolve_variants, run_variant
from histoxai.explain.runner import autocast
from histoxai.explain.scores import SCORES, head_score
from histoxai.models import build_regressor

SPECS = {  # variant -> (method, params, passes(params, size), forward only)
    "gradcam": ("gradcam", {}, lambda p, s: 1, False),
    "gradcampp": ("gradcampp", {}, lambda p, s: 1, False),
    "hirescam": ("hirescam", {}, lambda p, s: 1, False),
    "layercam": ("layercam", {}, lambda p, s: 1, False),
    "gradient": ("gradient", {}, lambda p, s: 1, False),
    "smoothgrad_s0.2": ("smoothgrad", {"sigma": 0.2, "n": 30}, lambda p, s: p["n"], False),
    "integrated_gradients": ("integrated_gradients", {"steps": 32}, lambda p, s: p["steps"], False),
    "occlusion": ("occlusion", {"window": 16, "stride": 8}, lambda p, s: ((s - 16) // 8 + 1) ** 2 + 1, True),
}
LIBRARY_CAM = {"gradcam": GradCAM, "gradcampp": GradCAMPlusPlus, "hirescam": HiResCAM, "layercam": LayerCAM}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, repeats: int = 3) -> float:
    """Best of ``repeats`` timings (after a warm-up): robust to other load on the machine."""
    fn()  # warm-up (cudnn autotune, allocator)
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def floor_rates(model, images, device, precision, batches, forward_only=False) -> dict[int, float]:
    """images/s of one forward (+ backward to the input) per batch size."""
    rates = {}
    for b in batches:
        x = images[:b]

        def step(x=x):
            with autocast(device, precision):
                if forward_only:
                    with torch.no_grad():
                        model(x)
                else:
                    xi = x.detach().requires_grad_(True)
                    torch.autograd.grad(model(xi)[:, 0].float().sum(), xi)

        rates[b] = b / timed(step, device)
    return rates


class HeadTarget:
    def __call__(self, output):
        return output[..., 0]


def per_image(method, params, model, images, device) -> float:
    """Seconds per map with the libraries used one image at a time."""
    f = head_score(model, 0, SCORES["higher"])
    if method in LIBRARY_CAM:
        layers = params["layers"] if method == "layercam" else [params["layer"]]
        cam = LIBRARY_CAM[method](model, [resolve_layer(model, layer)[1] for layer in layers])

        def run(x):
            return cam(x, targets=[HeadTarget()])

    elif method == "gradient":

        def run(x):
            return Saliency(f).attribute(x.requires_grad_(True), abs=False)

    elif method == "smoothgrad":

        def run(x):
            return NoiseTunnel(Saliency(f)).attribute(
                x, nt_samples=params["n"], stdevs=params["sigma"], abs=False
            )

    elif method == "integrated_gradients":

        def run(x):
            return IntegratedGradients(f).attribute(x, baselines=0.0, n_steps=params["steps"])

    else:
        w, s = params["window"], params["stride"]

        def run(x):
            return Occlusion(f).attribute(
                x, sliding_window_shapes=(3, w, w), strides=(3, s, s), baselines=0.0
            )

    def all_images():
        for i in range(len(images)):
            run(images[i : i + 1].clone())

    return timed(all_images, device, repeats=1) / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=64, help="images per timed call (and per-image loop)")
    parser.add_argument("--peer-images", type=int, default=8, help="images for the per-image library loop")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--methods", nargs="*", default=list(SPECS))
    parser.add_argument(
        "--default-batch", type=int, default=32, help="explain.batch_size for the default column"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_regressor(ModelConfig(backbone=args.backbone, targets=("md", "fa")), [1.0, 0.5], [0.5, 0.2])
    model = model.to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    big = 2048 if device.type == "cuda" else 256
    pool = torch.rand(big, 3, args.size, args.size, device=device)
    batches = [b for b in (8, 16, 32, 64, 128, 256, 512, 1024, 2048) if b <= big]
    fb = floor_rates(model, pool, device, args.precision, batches)
    best_b = max(fb, key=fb.get)
    print(
        f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), "
        f"{args.backbone} {args.size}px, precision {args.precision}"
    )
    print(
        "fwd+bwd images/s by batch: " + ", ".join(f"{b}: {r:.0f}" for b, r in fb.items()) + f"; best {best_b}"
    )
    images = pool[: args.images]
    head = (
        f"{'variant':<22}{'passes':>7}{'batch':>7}{'floor/s':>10}{'ours/s':>10}{'ours/floor':>11}"
        f"{'default/s':>10}{'dflt/floor':>11}{'per-img/s':>11}{'speedup':>9}"
    )
    print(head + "\n" + "-" * len(head))
    for name in args.methods:
        method, params, passes_fn, forward_only = SPECS[name]
        full = resolve_variants([VariantConfig(name, method, params)])[name]
        p = full["params"]
        passes = passes_fn(p, args.size)
        batch = min(args.images, best_b)
        chunk = max(1, best_b // batch)  # passes per call so that a forward batch is ~best_b
        p.update(
            {"smoothgrad": {"noise_batch": chunk}, "integrated_gradients": {"step_batch": chunk}}.get(
                method, {}
            )
        )
        if method == "occlusion":
            p["window_batch"] = chunk
        x = images[:batch]

        def ours(full=full, x=x):
            with autocast(device, args.precision):
                run_variant(full, model, x, 0, SCORES["higher"])

        ours_rate = batch / timed(ours, device)
        default = resolve_variants([VariantConfig(name, method, params)])[name]
        xd = images[: args.default_batch]

        def configured(default=default, xd=xd):
            with autocast(device, args.precision):
                run_variant(default, model, xd, 0, SCORES["higher"])

        default_rate = len(xd) / timed(configured, device)
        # The floor is measured again right after, so both see the same machine load.
        floor = floor_rates(model, pool, device, args.precision, [best_b], forward_only)[best_b] / passes
        peer = 1.0 / per_image(method, p, model, pool[: args.peer_images], device)
        print(
            f"{name:<22}{passes:>7}{batch:>7}{floor:>10.1f}{ours_rate:>10.1f}"
            f"{floor / ours_rate:>11.2f}{default_rate:>10.1f}{floor / default_rate:>11.2f}"
            f"{peer:>11.1f}{ours_rate / peer:>8.1f}x"
        )


if __name__ == "__main__":
    main()
