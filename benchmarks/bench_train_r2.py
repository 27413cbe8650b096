"""How close does the default CPU training get to what the phantom allows?

Trains the two pipeline models (``mdfa``: MD + FA, ``cc``: nuclei count) with the
``params.yaml`` settings on the default phantom, for the ``random`` and the
``leave_sample_out`` split, and prints test R² per target beside the phantom's R² ceiling
(``card["ceilings"]``: the share of variance left after the label noise) and the
polynomial baseline (``histoxai.evaluation.baseline``, when installed). Aims (random
split): CC ≥ 0.95, MD and FA within 0.05 of their ceilings. Nothing is tracked in MLflow.

Run (several minutes on a 2-core CPU)::

    .venv/bin/python benchmarks/bench_train_r2.py
    .venv/bin/python benchmarks/bench_train_r2.py --schemes random --set train.epochs=5
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

from histoxai.config import load_config
from histoxai.data.splits import assign_splits
from histoxai.data.store import PatchStore, write_store
from histoxai.training.session import predict_store, train_regressor

MODELS = {"mdfa": ("md", "fa"), "cc": ("cc",)}
AIM_CC, AIM_GAP = 0.95, 0.05


def r2(y: np.ndarray, yhat: np.ndarray) -> float:
    keep = np.isfinite(y) & np.isfinite(yhat)
    y, yhat = y[keep], yhat[keep]
    return float(1 - ((y - yhat) ** 2).sum() / ((y - y.mean()) ** 2).sum()) if len(y) > 1 else float("nan")


def baseline_r2(store: PatchStore, scheme: str, targets) -> dict[str, float]:
    try:
        from histoxai.evaluation.baseline import baseline_predictions
    except ImportError:
        return {}
    pred = baseline_predictions(store, scheme, list(targets))
    test = pred[pred["split"] == "test"]
    return {t: r2(test[f"y_{t}"].to_numpy(), test[f"yhat_{t}"].to_numpy()) for t in targets}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--schemes", default="random,leave_sample_out")
    p.add_argument("--models", default="mdfa,cc")
    args = p.parse_args()
    cfg = load_config(args.params, args.overrides)
    from histoxai.data.phantom import generate_phantom

    blocks, card = generate_phantom(cfg.data.phantom, cfg.data.patch_size_px, cfg.base.seed)
    root = Path(tempfile.mkdtemp(prefix="bench-r2-")) / "patches"
    store = write_store(root, blocks, card, partial(assign_splits, cfg=cfg.data.split, seed=cfg.base.seed))
    ceilings = store.card.get("ceilings", {})
    rows = []
    for scheme in args.schemes.split(","):
        for name in args.models.split(","):
            targets = MODELS[name]
            run_cfg = load_config(
                args.params,
                [*args.overrides, f"data.split.scheme={scheme}", f"model.targets=[{','.join(targets)}]"],
            )
            start = time.perf_counter()
            model, result, _ = train_regressor(run_cfg, store, progress=False)
            seconds = time.perf_counter() - start
            pred = predict_store(model, store, run_cfg)
            test = pred[pred["split"] == "test"]
            base = baseline_r2(store, scheme, targets)
            for t in targets:
                rows.append(
                    (scheme, name, t, r2(test[f"y_{t}"].to_numpy(), test[f"yhat_{t}"].to_numpy()),
                     ceilings.get(t, float("nan")), base.get(t, float("nan")), len(result.history), seconds)
                )  # fmt: skip
            print(f"trained {name} on {scheme} in {seconds:.0f}s ({len(result.history)} epochs)", flush=True)

    print(f"\nbackbone {cfg.model.backbone}, {store.patch_size} px, {len(store)} patches, test split")
    print(
        f"{'scheme':<18}{'model':<6}{'target':<7}{'R2':>7}{'ceiling':>9}{'baseline':>10}{'R2/ceil':>9}{'epochs':>8}{'s':>6}"
    )
    for scheme, name, t, value, ceil, base, epochs, seconds in rows:
        print(
            f"{scheme:<18}{name:<6}{t:<7}{value:>7.3f}{ceil:>9.3f}{base:>10.3f}{value / ceil:>9.3f}"
            f"{epochs:>8d}{seconds:>6.0f}"
        )
    for scheme, _, t, value, ceil, *_ in rows:
        if scheme == "random":
            aim = AIM_CC if t == "cc" else ceil - AIM_GAP
            print(f"aim random/{t}: R2 >= {aim:.3f}: {'met' if value >= aim else 'NOT met'} ({value:.3f})")


if __name__ == "__main__":
    main()
