"""The thesis' figures and tables (Lank 2024): saliency grids, Table 4.1, the per-sample protocol.

- :func:`select_patches` / :func:`saliency_grid`: Figs 4.2-4.4 and B.1-B.12, n random
  patches of a split (seeded) × method variant, one figure per target: the H&E patch,
  then each method's map over it with ``alpha`` in colour map ``cmap`` (each map min–max
  scaled for display, as tf-keras-vis' ``normalize``).
- :func:`table_4_1`: per-sample R² of a trained model, ``in`` (samples trained on) and
  ``out`` (the others), both R² definitions: ``r2`` = 1 − SS_res/SS_tot and ``ev`` =
  1 − var(y − ŷ)/var(y) (explained variance, the thesis' Eq. 3.2), beside the published
  per-tumour CNNs of Brabec et al. 2023 (``summary.mat``) where given.
- :func:`per_sample_protocol`: Brabec's protocol (Fig. 4.1's comparison): one model per
  sample, trained on that sample's own random 60/20/20 split, scored on its test patches.

Example:
    >>> ids = select_patches(SaliencyStore("data/saliency/histoxai-mdfa"), 12, "test", seed=0)
    >>> fig = saliency_grid(PatchStore("data/patches"), sal, "md", ["gradcampp"], ids)
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from histoxai.config import Config
from histoxai.data.store import PatchStore
from histoxai.errors import InputError
from histoxai.evaluation.metrics import sample_groups
from histoxai.io import atomic_path

GROUPS = ("in", "out")


# --------------------------------------------------------------------------- R² both ways


def r2_both(y: np.ndarray, y_hat: np.ndarray) -> dict[str, float]:
    """``{"r2", "ev", "n"}`` over the finite pairs (NaN for < 2 pairs or constant y).

    ``r2`` = 1 − SS_res/SS_tot (coefficient of determination); ``ev`` = 1 − var(y − ŷ)/var(y)
    (explained variance, the thesis' Eq. 3.2): equal for unbiased predictions, ``ev`` higher
    when out-of-sample predictions carry a constant offset.
    """
    y, y_hat = np.asarray(y, np.float64), np.asarray(y_hat, np.float64)
    ok = np.isfinite(y) & np.isfinite(y_hat)
    y, y_hat = y[ok], y_hat[ok]
    if y.size < 2 or np.var(y) == 0:
        return {"r2": np.nan, "ev": np.nan, "n": int(y.size)}
    r2 = 1 - np.sum((y - y_hat) ** 2) / np.sum((y - y.mean()) ** 2)
    ev = 1 - np.var(y - y_hat) / np.var(y)
    return {"r2": float(r2), "ev": float(ev), "n": int(y.size)}


def table_4_1(
    pred: pd.DataFrame, targets: Sequence[str], published: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Per-sample R² (rows: samples) as Table 4.1: ``in/r2_<t>``, ``in/ev_<t>``, ``out/...``,
    ``test/...`` (the in-sample test patches only: the held-out in-sample score), ``n_in``,
    ``n_out``; with ``published`` (rows: samples, columns e.g.
    ``brabec_cnn/r2_md``) joined beside.

    ``in`` rows of a sample are its train/val/test patches when the model trained on it,
    ``out`` its patches otherwise (``histoxai.evaluation.metrics.sample_groups``).
    """
    groups = sample_groups(pred)
    rows = {}
    for sample in dict.fromkeys(pred["sample"]):
        mine = (pred["sample"] == sample).to_numpy()
        row: dict[str, float] = {}
        for t in targets:
            for g in GROUPS:
                sel = pred[mine & (groups == g)]
                m = r2_both(sel[f"y_{t}"].to_numpy(), sel[f"yhat_{t}"].to_numpy())
                row[f"{g}/r2_{t}"], row[f"{g}/ev_{t}"] = m["r2"], m["ev"]
            test = pred[mine & (groups == "in") & (pred["split"] == "test").to_numpy()]
            m = r2_both(test[f"y_{t}"].to_numpy(), test[f"yhat_{t}"].to_numpy())
            row[f"test/r2_{t}"], row[f"test/ev_{t}"] = m["r2"], m["ev"]
        for g in GROUPS:
            row[f"n_{g}"] = int(np.sum(mine & (groups == g)))
        rows[sample] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table[[f"n_{g}" for g in GROUPS]] = table[[f"n_{g}" for g in GROUPS]].astype(int)
    table.index.name = "sample"
    if published is not None:
        table = table.join(published, how="left")
    return table


def brabec_cnn_table(summary: dict) -> pd.DataFrame:
    """Per sample (``s1``..``s16``) the published per-tumour CNNs' test R² (both ways) from
    ``summary.mat`` (``sMD_CNN``, ``sFAIP_CNN``): columns ``brabec_cnn/r2_md`` etc."""
    rows = {}
    for i in range(len(summary["sMR"])):
        row = {}
        for t, key in (("md", "sMD_CNN"), ("faip", "sFAIP_CNN")):
            if key in summary:
                m = r2_both(np.ravel(summary[key][i].measured), np.ravel(summary[key][i].predicted))
                row[f"brabec_cnn/r2_{t}"], row[f"brabec_cnn/ev_{t}"] = m["r2"], m["ev"]
        rows[f"s{i + 1}"] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """A Markdown table of ``frame`` (index first); NaN as an empty cell."""
    cols = [frame.index.name or "", *map(str, frame.columns)]
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for key, row in frame.iterrows():
        cells = [
            ""
            if isinstance(v, float) and not np.isfinite(v)
            else f"{v:.{digits}f}"
            if isinstance(v, float)
            else str(v)
            for v in row.tolist()
        ]
        lines.append("| " + " | ".join([str(key), *cells]) + " |")
    return "\n".join(lines)


def write_table(table: pd.DataFrame, out_dir: str | Path, name: str, title: str) -> list[Path]:
    """``<name>.csv`` and ``<name>.md`` (with ``title`` and the R² definitions), atomically."""
    out = Path(out_dir)
    paths = [out / f"{name}.csv", out / f"{name}.md"]
    with atomic_path(paths[0]) as tmp:
        table.to_csv(tmp, float_format="%.4f")
    text = (
        f"# {title}\n\n{markdown(table)}\n\nr2 = 1 − SS_res/SS_tot (coefficient of determination); "
        "ev = 1 − var(y − ŷ)/var(y) (explained variance, the thesis' Eq. 3.2). in: samples the model "
        "trained on (their train/val/test patches); out: the other samples.\n"
    )
    with atomic_path(paths[1]) as tmp:
        Path(tmp).write_text(text)
    return paths


# --------------------------------------------------------------------------- figure grids


def select_patches(sal, n: int, split: str, seed: int) -> np.ndarray:
    """``n`` patch ids drawn at random (``numpy.random.default_rng(seed)``) from the saliency
    store's patches of ``split`` (``all``: any), in drawn order."""
    meta = sal.meta.drop_duplicates("patch_id")
    if split != "all":
        meta = meta[meta["split"] == split]
    ids = meta["patch_id"].to_numpy(np.int64)
    if len(ids) == 0:
        raise ValueError(f"saliency store {sal.root} has no patches of split {split!r}")
    rng = np.random.default_rng(seed)
    return rng.permutation(ids)[: min(n, len(ids))]


def display_scale(maps: np.ndarray) -> np.ndarray:
    """(N, H, W) per-map min–max to [0, 1] (constant maps become 0)."""
    lo = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - lo
    return np.where(span > 0, (maps - lo) / np.where(span > 0, span, 1), 0.0)


def saliency_grid(
    patches: PatchStore,
    sal,
    target: str,
    variants: Sequence[str],
    patch_ids: np.ndarray,
    alpha: float = 0.6,
    cmap: str = "viridis",
):
    """A matplotlib figure: one row per patch (H&E, then each variant's map over it).

    Row labels give the sample, y and ŷ of the patch for ``target``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = sal.rows(patch_ids)
    images = patches.images(patch_ids)  # (N, P, P, 3) uint8
    maps = {v: display_scale(sal.read(target, v, rows)) for v in variants}
    meta = sal.meta[sal.meta["target"] == target].set_index("patch_id")
    n, k = len(patch_ids), len(variants) + 1
    fig, axes = plt.subplots(n, k, figsize=(1.6 * k, 1.6 * n), squeeze=False)
    for i, pid in enumerate(patch_ids):
        for j in range(k):
            ax = axes[i, j]
            ax.imshow(images[i])
            if j:
                ax.imshow(maps[variants[j - 1]][i], cmap=cmap, alpha=alpha, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title("H&E" if j == 0 else variants[j - 1], fontsize=7)
        m = meta.loc[int(pid)]
        axes[i, 0].set_ylabel(f"{m['sample']}\ny {m['y']:.3g}\nŷ {m['y_hat']:.3g}", fontsize=6)
    fig.suptitle(
        f"{target}: {n} random {', '.join(sorted(set(meta.loc[patch_ids, 'split'])))} patches", fontsize=8
    )
    fig.tight_layout()
    return fig


def write_figure(fig, path_stem: str | Path, dpi: int = 150) -> list[Path]:
    """Save ``fig`` as ``<stem>.png`` and ``<stem>.pdf`` (atomically) and close it."""
    import matplotlib.pyplot as plt

    stem = Path(path_stem)
    out = []
    for ext in ("png", "pdf"):
        path = stem.with_suffix(f".{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=ext)
        out.append(path)
    plt.close(fig)
    return out


# --------------------------------------------------------------------------- Brabec's protocol


def sample_split_view(store: PatchStore, sample: str, cfg: Config) -> PatchStore:
    """``store`` with its ``random`` split redrawn as Brabec's per-sample protocol: only
    ``sample`` is split (``data.split.fractions``, seed ``base.seed``), all others ``out``."""
    from histoxai.data.splits import assign_splits

    split_cfg = dataclasses.replace(
        cfg.data.split, in_samples=(sample,), holdout_samples=(), train_samples=()
    )
    view = copy.copy(store)
    index = store.index.drop(columns=[c for c in store.index if c.startswith("split_")])
    view.index = assign_splits(index, split_cfg, cfg.base.seed)
    return view


TrainFn = Callable[[Config, PatchStore], tuple]
"""``(cfg, store) -> (model, ...)``: ``histoxai.training.session.train_regressor``."""


def per_sample_protocol(
    cfg: Config, store: PatchStore, samples: Sequence[str] | None = None, train_fn: TrainFn | None = None
) -> pd.DataFrame:
    """One model per sample on its own random split; its test R² (both ways) per target.

    Args:
        cfg: the config (``model``, ``train``, ``data.split.fractions``, ``base.seed``);
            the split scheme is forced to ``random``.
        store: the patch store (all samples).
        samples: samples to run (default: all).
        train_fn: trainer, default ``histoxai.training.session.train_regressor``.

    Returns:
        Rows: samples; columns ``per_sample/r2_<t>``, ``per_sample/ev_<t>``, ``n_test``.
    """
    from histoxai.training.session import predict_store, train_regressor

    train_fn = train_fn or (lambda c, s: train_regressor(c, s, progress=False))
    cfg = dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, split=dataclasses.replace(cfg.data.split, scheme="random"))
    )
    rows = {}
    for sample in samples or store.samples:
        view = sample_split_view(store, sample, cfg)
        model = train_fn(cfg, view)[0]
        pred = predict_store(model, view, cfg)
        test = pred[(pred["sample"] == sample) & (pred["split"] == "test")]
        row: dict[str, float] = {"n_test": len(test)}
        for t in cfg.model.targets:
            m = r2_both(test[f"y_{t}"].to_numpy(), test[f"yhat_{t}"].to_numpy())
            row[f"per_sample/r2_{t}"], row[f"per_sample/ev_{t}"] = m["r2"], m["ev"]
        rows[sample] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "sample"
    return table


# --------------------------------------------------------------------------- everything at once


def write_thesis_outputs(
    cfg: Config,
    out_dir: str | Path,
    model_dir: str | Path | None = None,
    saliency_dir: str | Path | None = None,
    summary: dict | None = None,
    per_sample: bool = False,
) -> list[Path]:
    """Write the figure grids and tables that the inputs given allow.

    Args:
        cfg: the config (``figures`` section, ``base``, and ``model``/``train`` for
            ``per_sample``).
        out_dir: destination folder.
        model_dir: a trained model folder with ``predictions.parquet``: Table 4.1
            (``table_4_1.{md,csv}``).
        saliency_dir: a saliency store: one grid per target, ``grid_<target>.{png,pdf}``.
        summary: the loaded ``summary.mat`` (published per-tumour CNNs beside Table 4.1).
        per_sample: also run Brabec's per-sample protocol (``per_sample.{md,csv}``).

    Returns:
        The files written.
    """
    from histoxai.evaluation.predictions import load_predictions, prediction_targets

    fc, out, written = cfg.figures, Path(out_dir), []
    sal = patches = None
    if saliency_dir is not None:  # checked before anything is written
        from histoxai.explain.store import SaliencyStore

        sal = SaliencyStore(saliency_dir)
        sal.verify()
        unknown = sorted(set(fc.methods) - set(sal.variants))
        if unknown:
            raise InputError(f"figures.methods: {unknown} not in {saliency_dir}; it has {list(sal.variants)}")
        patches = PatchStore(cfg.base.patches_dir)  # verifies itself
    if model_dir is not None:
        pred = load_predictions(Path(model_dir) / "predictions.parquet")
        targets = [t for t in prediction_targets(pred) if not fc.targets or t in fc.targets]
        published = brabec_cnn_table(summary) if summary is not None else None
        table = table_4_1(pred, targets, published)
        written += write_table(table, out, "table_4_1", f"Table 4.1: per-sample R² of {Path(model_dir).name}")
    if sal is not None and patches is not None:
        variants = [v for v in sal.variants if not fc.methods or v in fc.methods]
        ids = select_patches(sal, fc.n_patches, fc.split, cfg.base.seed)
        for target in [t for t in sal.targets if not fc.targets or t in fc.targets]:
            done = [v for v in variants if sal.is_complete(target, v)]
            fig = saliency_grid(patches, sal, target, done, ids, fc.alpha, fc.cmap)
            written += write_figure(fig, out / f"grid_{target}", fc.dpi)
    if per_sample:
        table = per_sample_protocol(cfg, PatchStore(cfg.base.patches_dir))
        written += write_table(
            table, out, "per_sample", "Brabec's protocol: one model per sample, its test R²"
        )
    return written
