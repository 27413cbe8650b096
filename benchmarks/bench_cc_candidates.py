"""Candidate CC explainers against issue 10's bars, with the randomisation sanity verdict.

The demo's `xai-eval` scores the methods of `explain.methods`; this checks whether any
other explainer would clear the CC bars (mass accuracy >= 0.6, rank accuracy >= 0.85,
AUROC >= 0.95 against the counted-nuclei ground truth, per-nucleus hit rate >= 0.9,
distractor share <= half the distractor area) *and* pass the cascading-randomisation
check that gates the verdict (mean Spearman rho of |map| below the threshold at every
randomised block, on each of ``--draws`` re-initialisations, as `xai-eval`). Same patches as `xai-eval` (the seeded test subset),
same metric and sanity code. Rows: the ground-truth oracle and an i.i.d. random map (the
measuring stick: the oracle must meet every bar, random none), HiResCAM at three depths,
Integrated Gradients and DeepLIFT with a white (empty slide) and a blurred reference,
GradientSHAP, SmoothGrad; the CAMs also at the last stage (layer -1), whose resolution
``model.input_scale`` and ``model.output_stride`` set (32x32 at 128 px with 2 and 8).

Run::

    .venv/bin/python benchmarks/bench_cc_candidates.py --checkpoint models/histoxai-cc/model.pt
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from histoxai.config import VariantConfig
from histoxai.data.store import PatchStore
from histoxai.explain.methods import resolve_variants
from histoxai.models import load_checkpoint
from histoxai.xai_eval.inputs import explainer, select_patches, stratified
from histoxai.xai_eval.localisation import localisation_scores
from histoxai.xai_eval.sanity import randomisation_cascade, sanity_summary
from histoxai.xai_eval.truth import load_truth

BARS = {"mass_accuracy": 0.6, "rank_accuracy": 0.85, "auroc": 0.95, "nucleus_hit_rate": 0.9}
CANDIDATES = [
    VariantConfig("gradcam@-1", "gradcam", {"layer": -1}),
    VariantConfig("gradcam@-2", "gradcam", {"layer": -2}),
    VariantConfig("gradcampp@-1", "gradcampp", {"layer": -1}),
    VariantConfig("gradcampp@-2", "gradcampp", {"layer": -2}),
    VariantConfig("gradcam@-3", "gradcam", {"layer": -3}),
    VariantConfig("gradcam@-4", "gradcam", {"layer": -4}),
    VariantConfig("gradcampp@-3", "gradcampp", {"layer": -3}),
    VariantConfig("layercam@-1", "layercam", {"layers": [-1]}),
    VariantConfig("layercam@-3", "layercam", {"layers": [-3]}),
    VariantConfig("layercam@-4", "layercam", {"layers": [-4]}),
    VariantConfig("hirescam@-1", "hirescam", {"layer": -1}),
    VariantConfig("hirescam@-2", "hirescam", {"layer": -2}),
    VariantConfig("hirescam@-3", "hirescam", {"layer": -3}),
    VariantConfig("hirescam@-4", "hirescam", {"layer": -4}),
    VariantConfig("ig_white", "integrated_gradients", {"steps": 16, "baseline": 1.0}),
    VariantConfig("ig_blur", "integrated_gradients", {"steps": 16, "blur_sigma_px": 5.0}),
    VariantConfig("deeplift_white", "deeplift", {"baseline": 1.0, "blur_sigma_px": 0.0}),
    VariantConfig("deeplift_blur", "deeplift", {"blur_sigma_px": 5.0}),
    VariantConfig("gradient_shap", "gradient_shap", {"n": 16}),
    VariantConfig("smoothgrad_s0.2", "smoothgrad", {"sigma": 0.2, "n": 30}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="models/histoxai-cc/model.pt")
    parser.add_argument("--store", default="data/patches")
    parser.add_argument("--patches", type=int, default=64, help="as xai_eval.max_patches")
    parser.add_argument("--sanity-patches", type=int, default=8, help="as xai_eval.sanity_patches")
    parser.add_argument("--threshold", type=float, default=0.5, help="as xai_eval.sanity_threshold")
    parser.add_argument("--draws", type=int, default=5, help="as xai_eval.sanity_draws")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", default="", help="comma-separated candidate names (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    store, model = PatchStore(args.store), load_checkpoint(args.checkpoint)
    head = list(model.targets).index("cc")
    ids = select_patches(store.ids(split="test", scheme="random"), args.patches, 0)
    truth = load_truth(store, ids, "cc")
    if truth is None:
        raise SystemExit(f"{args.store}: no ground-truth masks (a phantom store is needed)")
    table = store.index.set_index("patch_id").loc[ids]
    y, samples = table["cc"].to_numpy(np.float32), table["sample"].to_numpy()
    images = torch.from_numpy(store.images(ids)).permute(0, 3, 1, 2).float() / 255
    sane = stratified(samples, args.sanity_patches, 0)
    distractor_bar = float(truth.distractor.mean()) / 2
    print(
        f"{len(ids)} test patches, {len(set(samples))} samples; sanity on {len(sane)}, threshold {args.threshold}, "
        f"{args.draws} draws"
    )
    print(f"bars: {BARS} distractor_share <= {distractor_bar:.4f} (half the distractor area)")
    cols = [*BARS, "distractor_share"]
    print(
        f"{'row':<18}"
        + "".join(f"{c[:12]:>13}" for c in cols)
        + f"{'bars met':>10}{'sanity':>8}  mean rho per block (largest draw)"
    )
    oracle = torch.from_numpy(truth.region.astype(np.float32))
    noise = torch.rand(oracle.shape, generator=torch.Generator().manual_seed(0))
    rows = [("oracle", None, oracle), ("random", None, noise)] + [
        (n, v, None)
        for n, v in resolve_variants(CANDIDATES).items()
        if not args.rows or n in args.rows.split(",")
    ]
    for name, variant, maps in rows:
        start = time.perf_counter()
        rho, passed = "", "-"
        if variant is not None:
            fn = explainer(variant, head, "higher", y, 0)
            maps = torch.cat([fn(model, images[i : i + 16]) for i in range(0, len(ids), 16)])
            cascade = randomisation_cascade(
                model, images[sane], explainer(variant, head, "higher", y[sane], 0), draws=args.draws
            )
            passed = "pass" if sanity_summary(cascade, args.threshold)[1] else "FAIL"
            rho = " ".join(
                f"{float(c['rank_corr'].nanmean()):.2f} ({float(c['rank_corr_draws'].max()):.2f})"
                for s, c in cascade.items()
                if s != "original"
            )
        scores = {k: float(v.nanmean()) for k, v in localisation_scores(maps, truth).items()}
        met = sum(scores[k] >= b for k, b in BARS.items()) + (scores["distractor_share"] <= distractor_bar)
        print(
            f"{name:<18}" + "".join(f"{scores[c]:>13.3f}" for c in cols)
            + f"{met:>7}/5{passed:>8}  {rho}  ({time.perf_counter() - start:.0f} s)"
        )  # fmt: skip


if __name__ == "__main__":
    main()
