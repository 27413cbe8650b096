"""XAI evaluation: throughput of the metric families, and the headline numbers of
issue 10's "Done when" read from a finished report.

Throughput (a tiny resnet10t with random weights, random patches and masks), per
family, patches/s for one method's maps of one target, with a ratio against a floor
or a peer:

- localisation (mass/rank accuracy, pointing game, AUROC, signed agreement, object
  metrics) vs Quantus 0.6's four published metrics on the same inputs (peer);
- faithfulness (signed deletion, insertion, ROAD MoRF/LeRF: 4 x (steps + 1) forward
  passes per patch) vs the forward-only floor;
- sanity (cascading randomisation, gradient) and robustness (max-sensitivity, 50
  draws); the cluster bootstrap (1000 draws) of one metric.

Speed-up (``--speedup``): one faithfulness row (4 curves of ``steps + 1`` fractions)
as ``histoxai xai-eval`` computed it before and now, in one process on the same
inputs, with the ratio and the largest difference of the scores: ROAD imputation
(eight shifted slices per Jacobi sweep vs in-place separable sweeps in cache-sized
chunks, skipping images with nothing or everything removed), the forward passes
(every fraction and the reference per curve vs one reference and baseline score per
batch and no pass for an image known to be the original or the baseline) and the
memory layout (NCHW vs channels_last). Measured with the demo's CC model
(``--checkpoint``, 16 patches of 128 px, 1 thread, 2 cores at load 6-10): imputation
4.3x, forward 2.0x, one row 3.35x, largest score difference 4e-6. A whole default
``xai-eval`` of the CC maps (64 patches, 12 rows) took 992 s at load 7-13 on 1 thread
(faithfulness 541 s: imputation 280, forward passes 215; max-sensitivity 278 s,
randomisation 122 s, SmoothGrad's 30 noise passes being most of both); every
statistic of its ranking.json matched the run before these changes to 2e-5 (relative).

Headline (``--report reports/xai_eval/histoxai-cc``): for the CC target, the best
method's mass accuracy, rank accuracy, AUROC, per-nucleus hit rate and distractor
share against the floors of issue 10, its P(top) and the verdict.

Run::

    .venv/bin/python benchmarks/bench_xai_eval.py [--patches 64] [--size 64] [--threads 1]
    .venv/bin/python benchmarks/bench_xai_eval.py --speedup --size 128 --patches 32
    .venv/bin/python benchmarks/bench_xai_eval.py --report reports/xai_eval/histoxai-cc
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import timm
import torch
import torch.nn.functional as F
from torch import nn

from histoxai.models import load_checkpoint
from histoxai.xai_eval import faithfulness as fa
from histoxai.xai_eval import stats
from histoxai.xai_eval.faithfulness import baseline_images, faithfulness_scores
from histoxai.xai_eval.localisation import localisation_scores
from histoxai.xai_eval.sanity import randomisation_cascade, randomisation_steps
from histoxai.xai_eval.stability import max_sensitivity
from histoxai.xai_eval.truth import derived_truth

FLOORS = {  # issue 10, "Done when": metric -> (direction, floor)
    "mass_accuracy": (">=", 0.6),
    "rank_accuracy": (">=", 0.85),
    "auroc": (">=", 0.95),
    "nucleus_hit_rate": (">=", 0.9),
}


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


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def throughput(a) -> None:
    if a.threads:
        torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    model = Tiny().eval()
    n = a.patches
    x = torch.rand(n, 3, a.size, a.size, generator=g)
    masks = np.random.default_rng(0).integers(0, 4, (n, a.size, a.size)).astype(np.uint8)
    truth = derived_truth("md", masks, np.arange(n), None, pd.DataFrame())
    maps = gradient(model, x).detach()
    rows = []
    with torch.no_grad():
        model(x[: a.batch])
        fwd = timed(lambda: [model(x[i : i + a.batch]) for i in range(0, n, a.batch)])
    rows.append(("forward pass (reference)", n / fwd, None, ""))

    t_ours = timed(lambda: localisation_scores(maps, truth))
    t_q = quantus_time(maps, truth)
    rows.append(
        ("localisation (9 metrics)", n / t_ours, t_q / t_ours if t_q else None, "x Quantus 0.6, 4 metrics")
    )

    def faith():
        for i in range(0, n, a.batch):
            xb = x[i : i + a.batch]
            faithfulness_scores(lambda z: model(z)[:, 0], xb, maps[i : i + a.batch], baseline_images(xb), a.steps,
                                batch_size=a.batch * 4, generator=g)  # fmt: skip

    t = timed(faith)
    floor = (n / fwd) / (4 * (a.steps + 1))
    rows.append(("faithfulness (4 signed curves)", n / t, (n / t) / floor, "x forward-only floor"))
    k = min(n, 8)
    steps = len(randomisation_steps(model))
    t = timed(lambda: randomisation_cascade(model, x[:k], gradient))
    rows.append((f"sanity ({steps} blocks, gradient)", k / t, None, ""))
    t = timed(lambda: max_sensitivity(model, x[:k], gradient, 0.02, 50))
    rows.append(("max-sensitivity (50 draws)", k / t, None, ""))
    draws, codes = stats.sample_weights(np.repeat(np.arange(6), n // 6 + 1)[:n].astype(str), 1000, 0)
    t = timed(lambda: stats.boot_means(np.random.default_rng(0).random(n), codes, draws))
    rows.append(("cluster bootstrap (1000 draws)", n / t, None, ""))

    print(f"cpu, {n} patches of {a.size} px, steps {a.steps}, threads {torch.get_num_threads()}")
    print(f"{'family':<34} {'patches/s':>10}  ratio")
    for name, rate, ratio, what in rows:
        print(f"{name:<34} {rate:>10.1f}  " + (f"{ratio:.2f} {what}" if ratio is not None else ""))


def _neighbour_mean_before(x):
    """The sweep as it was: eight shifted slices of a replicate-padded copy."""
    h, w = x.shape[-2:]
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    edge = (
        p[..., 0:h, 1 : w + 1]
        + p[..., 2 : h + 2, 1 : w + 1]
        + p[..., 1 : h + 1, 0:w]
        + p[..., 1 : h + 1, 2 : w + 2]
    )
    diag = p[..., 0:h, 0:w] + p[..., 0:h, 2 : w + 2] + p[..., 2 : h + 2, 0:w] + p[..., 2 : h + 2, 2 : w + 2]
    return edge / 6 + diag / 12


def _impute_before(images, removed, noise_sd, generator, iters=20):
    keep = (~removed).to(images.dtype)
    x = torch.where(removed, fa._smooth_fill(images, keep), images)
    for _ in range(iters):
        x = torch.where(removed, _neighbour_mean_before(x), images)
    noise = torch.randn(images.shape, generator=generator).to(images.device, images.dtype) * noise_sd
    return (x + noise * removed).clamp(0.0, 1.0)


def _row_before(predict, x, maps, base, steps, batch, generator):
    """One faithfulness row as computed before: every fraction and the reference per curve."""
    curves = {}
    for mode in ("deletion", "insertion", "road_morf", "road_lerf"):
        first = fa._first_fraction_masks(
            fa.relevance_order(-maps if mode == "road_lerf" else maps, generator), steps
        )
        if mode == "deletion":
            pert = torch.where(first, base[:, None], x[:, None])
        elif mode == "insertion":
            pert = torch.where(first, x[:, None], base[:, None])
        else:
            flat_x = x[:, None].expand(-1, steps + 1, -1, -1, -1).reshape(-1, *x.shape[1:])
            pert = _impute_before(flat_x, first.reshape(-1, 1, *x.shape[2:]), 0.01, generator)
        preds = fa._predict_chunked(predict, pert.reshape(-1, *x.shape[1:]), batch).view(len(x), steps + 1)
        curves[mode] = fa._predict_chunked(predict, x, batch)[:, None] - preds
    return {f"{m}_auc": fa.curve_area(c) for m, c in curves.items()}


def speedup(a) -> None:
    """One faithfulness row, before vs now, same inputs and seeds (see module doc)."""
    if a.threads:
        torch.set_num_threads(a.threads)
    model = (load_checkpoint(a.checkpoint) if a.checkpoint else Tiny()).eval()
    x = fa.gaussian_blur(
        torch.rand(a.patches, 3, a.size, a.size, generator=torch.Generator().manual_seed(0)), 1.0
    )
    maps = fa.gaussian_blur(
        torch.randn(a.patches, 1, a.size, a.size, generator=torch.Generator().manual_seed(1)), 3.0
    )[:, 0]
    base = baseline_images(x)
    flat_x = x[:, None].expand(-1, a.steps + 1, -1, -1, -1).reshape(-1, *x.shape[1:])
    removed = fa._first_fraction_masks(fa.relevance_order(maps, torch.Generator().manual_seed(2)), a.steps)
    removed = removed.reshape(-1, 1, a.size, a.size)
    rows = []
    with torch.no_grad():
        old, t_old = _timed_out(
            lambda: _impute_before(flat_x, removed, 0.01, torch.Generator().manual_seed(3))
        )
        new, t_new = _timed_out(
            lambda: fa.noisy_linear_impute(flat_x, removed, 0.01, generator=torch.Generator().manual_seed(3))
        )
        rows.append(("ROAD imputation", t_old, t_new, float((old - new).abs().max())))
        plain = lambda z: model(z)[:, 0]  # noqa: E731
        _, t_old = _timed_out(lambda: fa._predict_chunked(plain, flat_x, a.batch * 4))
        model.to(memory_format=torch.channels_last)
        _, t_new = _timed_out(lambda: fa._predict_chunked(plain, flat_x, a.batch))
        rows.append((f"forward NCHW/{a.batch * 4} -> NHWC/{a.batch}", t_old, t_new, float("nan")))
        model.to(memory_format=torch.contiguous_format)
        old, t_old = _timed_out(
            lambda: _row_before(plain, x, maps, base, a.steps, a.batch * 4, torch.Generator().manual_seed(4))
        )
        model.to(memory_format=torch.channels_last)

        def now():
            ref, bs = (
                fa._predict_chunked(plain, x, a.batch),
                fa._predict_chunked(plain, base, a.batch),
            )
            return faithfulness_scores(
                plain, x, maps, base, a.steps, 0.01, a.batch, torch.Generator().manual_seed(4), ref, bs
            )[0]

        new, t_new = _timed_out(now)
        diff = max(float((old[k] - new[k]).abs().max()) for k in old)
        rows.append(("faithfulness row (4 curves)", t_old, t_new, diff))
    print(f"cpu, {a.patches} patches of {a.size} px, steps {a.steps}, threads {torch.get_num_threads()}")
    print(f"{'part':<32} {'before s':>9} {'now s':>8} {'ratio':>6}  max |diff|")
    for name, t0, t1, d in rows:
        print(f"{name:<32} {t0:>9.2f} {t1:>8.2f} {t0 / t1:>6.2f}  {d:.2e}")


def _timed_out(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def quantus_time(maps, truth) -> float | None:
    try:
        import quantus
    except ImportError:
        return None
    a = maps.double().numpy()[:, None]
    s = truth.region[:, None].astype(np.float64)
    x, y = np.zeros((len(a), 3, *a.shape[2:])), np.zeros(len(a), dtype=np.int64)
    kw = {"disable_warnings": True, "abs": False, "normalise": False}
    metrics = [quantus.RelevanceMassAccuracy(**kw), quantus.RelevanceRankAccuracy(**kw), quantus.PointingGame(**kw),
               quantus.AUC(**kw)]  # fmt: skip

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for m in metrics:
                m(
                    model=None,
                    x_batch=x,
                    y_batch=y,
                    a_batch=np.clip(a, 0, None),
                    s_batch=s,
                    channel_first=True,
                )

    return timed(run)


def headline(report: Path, target: str) -> None:
    """Issue 10's CC criteria for the verdict's best method, from a finished report."""
    t = pd.read_csv(report / "tables" / f"stats_{target}.csv")
    rank = json.loads((report / "ranking.json").read_text())["targets"][target]
    order = rank["methods"]
    if not order:
        print("no methods")
        return
    best = order[0]["method"]
    print(f"{report}: target {target}; verdict: {rank['verdict']}")
    print(f"best method by P(top): {best} (resolution {'x'.join(map(str, order[0]['resolution']))})")
    print(f"{'metric':<22} {'value [95% CI]':>26} {'norm':>7}  floor   pass")
    sel = t[t["method"] == best].set_index("metric")
    for metric, (op, floor) in FLOORS.items():
        if metric in sel.index:
            r = sel.loc[metric]
            ok = r["mean"] >= floor
            print(
                f"{metric:<22} {r['mean']:>8.3f} [{r['lo']:.3f}, {r['hi']:.3f}] {r['norm_mean']:>7.3f}  {op}{floor:<5} {'yes' if ok else 'NO'}"
            )
    if "distractor_share" in sel.index:
        # the distractor pixel share of the patches: the 'random' row's expected mass share
        rnd = t[(t["method"] == "random") & (t["metric"] == "distractor_share")]["mean"]
        half = 0.5 * float(rnd.iloc[0]) if len(rnd) else float("nan")
        d = sel.loc["distractor_share", "mean"]
        print(
            f"{'distractor_share':<22} {d:>8.3f}  (<= half the area share {half:.3f}: {'yes' if d <= half else 'NO'})"
        )
    p = sel.loc["mass_accuracy", "p_top"] if "mass_accuracy" in sel.index else float("nan")
    print(
        f"P(top) on mass_accuracy: {p:.3f} (>= 0.9: {'yes' if p >= 0.9 else 'NO'}); status: {rank['status']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patches", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave)")
    parser.add_argument("--report", type=Path, default=None, help="a report dir: print the headline instead")
    parser.add_argument("--target", default="cc")
    parser.add_argument("--speedup", action="store_true", help="one faithfulness row, before vs now")
    parser.add_argument(
        "--checkpoint", default=None, help="--speedup: a model.pt instead of the tiny resnet10t"
    )
    a = parser.parse_args()
    if a.report:
        headline(a.report, a.target)
    elif a.speedup:
        speedup(a)
    else:
        throughput(a)


if __name__ == "__main__":
    main()
