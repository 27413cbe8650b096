"""How much one mode dominates each backbone stage of trained models (the cause of CAMs
that survive the randomisation check; README "CAM resolution", ``train.decorrelation``).

For each checkpoint, each stage's channels are globally pooled over the first
``--patches`` test patches. The script prints the mean squared off-diagonal correlation
(the penalty ``train.decorrelation`` weighs) and the share of variance of the first
principal component of the standardised channels. One channel mode shows as a share near
1; independent channels as a share near 1/channels. With several checkpoints it prints each
one's mean share over stages as a ratio to the first's.

Run::

    .venv/bin/python benchmarks/bench_feature_modes.py plain/model.pt decorrelated/model.pt
"""

from __future__ import annotations

import argparse

import torch

from histoxai.data.datasets import to_model_input
from histoxai.data.store import PatchStore
from histoxai.models import load_checkpoint
from histoxai.models.backbones import stage_layers
from histoxai.training.fit import captured_stages, decorrelation_penalty, pooled_channels


def stage_modes(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[float, float]]:
    """(mean squared off-diagonal correlation, first component's variance share) per stage."""
    with torch.no_grad(), captured_stages(model) as stages:
        model.eval()(x)
    rows = []
    for f in stages:
        pooled = pooled_channels(f.float())
        z = (pooled - pooled.mean(0)) / pooled.std(0).clamp_min(1e-6)
        var = torch.linalg.svdvals(z) ** 2
        rows.append((decorrelation_penalty(pooled).item(), (var[0] / var.sum()).item()))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="*", default=["models/histoxai-cc/model.pt"])
    parser.add_argument("--store", default="data/patches")
    parser.add_argument("--patches", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    store = PatchStore(args.store)
    images = torch.as_tensor(store.images(store.ids("test")[: args.patches])).permute(0, 3, 1, 2)
    x = to_model_input(images, "cpu", channels_last=False)
    shares = []
    for path in args.checkpoints:
        model = load_checkpoint(path)
        rows = stage_modes(model, x)
        names = [n.removeprefix("backbone.") for n in stage_layers(model)]
        print(path)
        for name, (r2, share) in zip(names, rows, strict=True):
            print(f"  {name:10s} mean r^2 {r2:.3f}  first component {share:.2f}")
        shares.append(sum(s for _, s in rows) / len(rows))
    for path, share in zip(args.checkpoints[1:], shares[1:], strict=True):
        print(
            f"{path}: first-component share {share:.2f} = {share / shares[0]:.2f}x {args.checkpoints[0]}'s {shares[0]:.2f}"
        )


if __name__ == "__main__":
    main()
