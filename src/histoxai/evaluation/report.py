"""The evaluation report: metrics of the CNN and the baseline per split and per sample,
the R² ceiling of the phantom, tables (Markdown + CSV), figures and ``metrics.json``.

Example:
    >>> ev = evaluate(pred, ["md", "fa"], baseline=base, ceilings={"md": 0.93})
    >>> write_report("reports/evaluate/histoxai-mdfa", ev, pred, base, info={"model": "histoxai-mdfa"})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from histoxai.evaluation.metrics import flat_metrics, per_sample_table, per_split_table
from histoxai.evaluation.plots import label, plot_sample_maps, plot_scatter
from histoxai.io import atomic_files, write_json

CNN, BASELINE = "CNN", "baseline"
COMPARED_SPLITS: tuple[str, ...] = ("val", "test", "out")


@dataclass
class Evaluation:
    """Metrics of each model (``"CNN"``, ``"baseline"``) and the flat ``metrics`` dict.

    ``metrics`` keys: ``test/r2_md`` (CNN), ``baseline/test/r2_md``,
    ``sample/<s>/in/r2_md``, ``baseline/sample/<s>/out/r2_md``, ``ceiling/r2_md``.
    """

    targets: list[str]
    per_split: dict[str, pd.DataFrame]
    per_sample: dict[str, pd.DataFrame]
    ceilings: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def evaluate(
    pred: pd.DataFrame,
    targets: Sequence[str],
    baseline: pd.DataFrame | None = None,
    ceilings: Mapping[str, float] | None = None,
) -> Evaluation:
    """Metrics of ``pred`` (and ``baseline``, same columns) per split and per sample."""
    frames = {CNN: pred} if baseline is None else {CNN: pred, BASELINE: baseline}
    per_split = {m: per_split_table(f, targets) for m, f in frames.items()}
    per_sample = {m: per_sample_table(f, targets) for m, f in frames.items()}
    ceilings = {t: float(ceilings[t]) for t in targets if ceilings and t in ceilings}
    metrics: dict[str, float] = {}
    for model in frames:
        prefix = "" if model == CNN else f"{model}/"
        metrics.update(flat_metrics(per_split[model], per_sample[model], prefix))
    metrics.update({f"ceiling/r2_{t}": v for t, v in ceilings.items()})
    return Evaluation(list(targets), per_split, per_sample, ceilings, metrics)


def comparison_table(ev: Evaluation) -> pd.DataFrame:
    """R² per target (rows): CNN and baseline on val/test/out, and the ceiling."""
    rows = {}
    for t in ev.targets:
        row = {}
        for split in COMPARED_SPLITS:
            for model, table in ev.per_split.items():
                if split in table.index:
                    row[f"{model} {split}"] = table.at[split, f"r2_{t}"]
        if ev.ceilings:
            row["ceiling"] = ev.ceilings.get(t, np.nan)
        rows[label(t)] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("R²")


def markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    """A pipe table of ``frame`` (index as first column); NaN shown as ``–``."""

    def cell(v) -> str:
        if isinstance(v, (float, np.floating)):
            return "–" if not np.isfinite(v) else f"{v:.{digits}f}" if abs(v) < 1e4 else f"{v:.3g}"
        return str(v)

    head = [frame.index.name or "", *map(str, frame.columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * len(frame.columns)) + "|"]
    for idx, *values in frame.itertuples(name=None):  # keeps each column's dtype (counts stay ints)
        lines.append("| " + " | ".join([str(idx), *(cell(v) for v in values)]) + " |")
    return "\n".join(lines)


def _split_view(table: pd.DataFrame, targets: Sequence[str]) -> pd.DataFrame:
    cols = {
        f"{m}_{t}": f"{m.upper() if m != 'r2' else 'R²'} {t}" for t in targets for m in ("r2", "mse", "mae")
    }
    view = table[list(cols)].rename(columns=cols)
    view["n"] = table[f"n_{targets[0]}"].astype(int)
    return view


def _sample_view(table: pd.DataFrame, targets: Sequence[str]) -> pd.DataFrame:
    cols = {f"{g}/r2_{t}": f"R² {t} {g}" for t in targets for g in ("in", "out")}
    view = table[list(cols)].rename(columns=cols)
    view["n in"], view["n out"] = table["n_in"].astype(int), table["n_out"].astype(int)
    return view


def render_markdown(
    ev: Evaluation, info: Mapping[str, object], notes: Sequence[str], figures: Sequence[str]
) -> str:
    """``report.md`` text: run info, comparison, per-split and per-sample tables, figures."""
    out = [f"# Evaluation: {info.get('model', 'model')}", ""]
    out += [f"- {k}: `{v}`" for k, v in info.items() if v not in (None, "")]
    out += ["", "## CNN vs baseline vs ceiling (R²)", "", markdown_table(comparison_table(ev)), ""]
    out += [f"- {n}" for n in notes] + [""]
    for model, table in ev.per_split.items():
        out += [f"## Per split: {model}", "", markdown_table(_split_view(table, ev.targets)), ""]
    out += [
        "## Per sample (R²)",
        "",
        "`in`: the sample's train/val/test patches when the model trained on the sample; "
        "`out`: its held-out (`out`) patches, or all its patches when the model never saw it.",
        "",
    ]
    for model, table in ev.per_sample.items():
        out += [f"### {model}", "", markdown_table(_sample_view(table, ev.targets)), ""]
    out += ["## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in figures] + [""]
    return "\n".join(out)


REPORT_FILES = (
    "metrics.json", "report.md", "per_split.csv", "per_sample.csv", "baseline_predictions.parquet", "plots",
)  # fmt: skip
"""Everything :func:`write_report` may write into a report directory."""


def write_report(
    out_dir: str | Path,
    ev: Evaluation,
    pred: pd.DataFrame,
    baseline: pd.DataFrame | None = None,
    info: Mapping[str, object] | None = None,
    notes: Sequence[str] = (),
) -> Path:
    """Write the report into ``out_dir``, every file renamed into place once all are done.

    The directory itself is kept (DVC's ``.gitignore`` in it survives); report files an
    earlier run wrote and this one does not (``baseline_predictions.parquet`` after the
    baseline was turned off) are removed.

    Contents: ``metrics.json`` (flat, finite numbers), ``report.md``, ``per_split.csv``,
    ``per_sample.csv``, ``baseline_predictions.parquet`` (with a baseline) and
    ``plots/scatter_<t>.png``, ``plots/maps_<sample>.png``.
    """
    info = dict(info or {})
    name = str(info.get("model", ""))
    with atomic_files(out_dir, REPORT_FILES) as tmp:
        plots = tmp / "plots"
        plots.mkdir(parents=True)
        figures = []
        frames = {CNN: pred} if baseline is None else {CNN: pred, BASELINE: baseline}
        for t in ev.targets:
            title = f"{name}: predicted vs measured {label(t)}"
            if t in ev.ceilings:
                title += f" (phantom R² ceiling {ev.ceilings[t]:.3f})"
            plot_scatter(frames, t, plots / f"scatter_{t}.png", title)
            figures.append(f"plots/scatter_{t}.png")
        samples = list(dict.fromkeys(pred["sample"]))
        cnn_samples = ev.per_sample[CNN]
        for sample in tqdm(samples, desc="evaluate: maps", leave=False):
            r2 = ", ".join(
                f"{t.upper()} {g} {cnn_samples.at[sample, f'{g}/r2_{t}']:.3f}"
                for t in ev.targets
                for g in ("in", "out")
                if np.isfinite(cnn_samples.at[sample, f"{g}/r2_{t}"])
            )
            title = f"{name}: sample {sample}" + (f" (R² {r2})" if r2 else "")
            plot_sample_maps(pred, sample, ev.targets, plots / f"maps_{sample}.png", title)
            figures.append(f"plots/maps_{sample}.png")
        write_json(tmp / "metrics.json", ev.metrics)
        _long(ev.per_split).to_csv(tmp / "per_split.csv")
        _long(ev.per_sample).to_csv(tmp / "per_sample.csv")
        if baseline is not None:
            baseline.to_parquet(tmp / "baseline_predictions.parquet", index=False)
        (tmp / "report.md").write_text(render_markdown(ev, info, notes, figures))
    return Path(out_dir)


def _long(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat({m: t for m, t in tables.items()}, names=["model"])
