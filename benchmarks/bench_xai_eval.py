"""Throughput of the XAI-evaluation metric families on a tiny model (resnet10t, random
weights) and random patches.

Per family, patches/s for one method's maps of one target:

- localisation: the four mask metrics + distractor share, torch vs Quantus 0.6 (peer);
- faithfulness: deletion + insertion + ROAD MoRF + LeRF curves (4 x (steps + 1)
  forward passes per patch); the floor is plain forward throughput / (4 x (steps + 1)),
  i.e. what the curves would cost if building the perturbed images were free;
- sanity: the randomisation cascade with an input-gradient explainer (1 + #steps
  re-explanations per patch);
- stability: ``copies`` noisy re-explanations per patch;
- tissue shares: class shares per map.

Run::

    .venv/bin/python benchmarks/bench_xai_eval.py [--patches 64] [--size 64] [--device cpu] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import timm
import torch
from torch import nn

from histoxai.xai_eval.faithfulness import baseline_images, faithfulness_scores
from histoxai.xai_eval.localisation import localisation_scores
from histoxai.xai_eval.sanity import randomisation_cascade, randomisation_steps
from histoxai.xai_eval.stability import noise_stability
from histoxai.xai_eval.tissue import class_shares, labels_from_masks


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.targets = ("md",)
        self.backbone = timm.create_model("resnet10t", pretrained=False, num_classes=0)
        self.head = nn.Linear(self.backbone.num_features, 1)

    def forward(self, x):
        return self.head(self.backbone(x * 2 - 1))


def gradient(model, x):
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x)[:, 0].sum(), x)
    return g.sum(dim=1)


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patches", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave)")
    a = parser.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    model = Tiny().eval().to(device)
    x = torch.rand(a.patches, 3, a.size, a.size, generator=g).to(device)
    masks = torch.randint(0, 4, (a.patches, a.size, a.size), generator=g).to(torch.uint8)
    maps = gradient(model, x).detach()
    labels = labels_from_masks(masks)
    n = a.patches
    rows = []

    with torch.no_grad():
        model(x[: a.batch])  # warm-up
        fwd = timed(lambda: [model(x[i : i + a.batch]) for i in range(0, n, a.batch)], device)
    rows.append(("forward pass (reference)", n / fwd, None, ""))

    t_torch = timed(lambda: localisation_scores(maps, masks, "md", "torch"), device)
    localisation_scores(maps[:2], masks[:2], "md", "quantus")  # import + warm-up
    t_quantus = timed(lambda: localisation_scores(maps, masks, "md", "quantus"), device)
    rows.append(("localisation, torch", n / t_torch, t_quantus / t_torch, "x Quantus 0.6 (peer)"))
    rows.append(("localisation, quantus", n / t_quantus, None, ""))

    def faith():
        for i in range(0, n, a.batch):
            xb = x[i : i + a.batch]
            faithfulness_scores(
                lambda z: model(z)[:, 0], xb, maps[i : i + a.batch], baseline_images(xb), a.steps,
                batch_size=a.batch * 4, generator=g,
            )  # fmt: skip

    t = timed(faith, device)
    floor = (n / fwd) / (4 * (a.steps + 1))
    rows.append(("faithfulness (4 curves)", n / t, (n / t) / floor, "x forward-only floor"))

    k = min(n, 16)
    steps = len(randomisation_steps(model))
    t = timed(lambda: randomisation_cascade(model, x[:k], gradient), device)
    rows.append((f"sanity ({steps} steps, gradient)", k / t, None, ""))
    t = timed(lambda: noise_stability(model, x[:k], gradient, copies=3), device)
    rows.append(("stability (3 copies, gradient)", k / t, None, ""))
    t = timed(lambda: class_shares(maps, labels), device)
    rows.append(("tissue shares", n / t, None, ""))

    print(f"device {device}, {n} patches of {a.size} px, steps {a.steps}, threads {torch.get_num_threads()}")
    print(f"{'family':<34} {'patches/s':>10}  ratio")
    for name, rate, ratio, what in rows:
        print(f"{name:<34} {rate:>10.1f}  " + (f"{ratio:.2f} {what}" if ratio is not None else ""))


if __name__ == "__main__":
    main()
