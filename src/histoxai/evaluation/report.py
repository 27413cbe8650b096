"""The evaluation report: metrics of the CNN, the polynomial baseline and the sample-mean
shortcut per split and per sample, the phantom's R² ceilings, tables (Markdown + CSV),
figures and ``metrics.json``.

Every R² is given three ways (``r2``, ``ev``, ``r2within``; see
``histoxai.evaluation.metrics``) beside the two baselines. With several seeds, the CNN's
numbers are the mean over seeds and the report gives their standard deviation.
``metrics/<target>.json`` holds only the headline numbers (DVC metrics: ``dvc metrics show``
fits 130 columns); every metric goes to ``all_metrics.json`` and MLflow, the full tables to
CSV/Markdown.

Example:
    >>> ev = evaluate(pred, ["md", "fa"], baseline=base, ceilings={"ceiling": {"md": 0.93}})
    >>> write_report("reports/evaluate/histoxai-mdfa", ev, pred, base, info={"model": "histoxai-mdfa"})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from histoxai.evaluation.baseline import sample_mean_predictions
from histoxai.evaluation.metrics import flat_metrics, per_sample_table, per_split_table
from histoxai.evaluation.plots import label, plot_sample_maps, plot_scatter
from histoxai.io import atomic_files, write_json

CNN, BASELINE, SAMPLE_MEAN = "CNN", "baseline", "sample-mean"
PREFIX: dict[str, str] = {CNN: "", BASELINE: "baseline/", SAMPLE_MEAN: "samplemean/"}
COMPARED_SPLITS: tuple[str, ...] = ("val", "test", "out")
HEADLINE_SPLIT = "test"
HEADLINE: dict[str, str] = {"r2": "{split}/r2_{t}", "oracle": "oracle/r2_{t}"}
"""The keys of ``metrics/<target>.json`` and the metric each one holds."""


@dataclass
class Evaluation:
    """Metrics of each model (``"CNN"``, ``"baseline"``, ``"sample-mean"``).

    ``per_split``/``per_sample``: tables per model (the CNN's: mean over ``seeds``);
    ``spread``: the CNN's per-split standard deviation over seeds (None for one seed);
    ``per_seed``: the CNN's per-split table of each seed. ``ceilings``: per kind
    (``ceiling``: label noise; ``oracle``: image-oracle) the R² per target.
    ``metrics``: every finite metric, flat (``test/r2_md``, ``baseline/test/r2_md``,
    ``samplemean/test/r2within_md``, ``sample/<s>/in/r2_md``, ``ceiling/r2_md``,
    ``test/r2sd_md``); ``headline``: per target the few that go to ``metrics/<target>.json``.
    """

    targets: list[str]
    per_split: dict[str, pd.DataFrame]
    per_sample: dict[str, pd.DataFrame]
    ceilings: dict[str, dict[str, float]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    headline: dict[str, dict[str, float]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    per_seed: dict[int, pd.DataFrame] = field(default_factory=dict)
    spread: pd.DataFrame | None = None


def evaluate(
    pred: pd.DataFrame,
    targets: Sequence[str],
    baseline: pd.DataFrame | None = None,
    ceilings: Mapping[str, Mapping[str, float]] | None = None,
    seed_preds: Mapping[int, pd.DataFrame] | None = None,
) -> Evaluation:
    """Metrics of ``pred`` (and ``baseline``, same columns, and the sample-mean shortcut)
    per split and per sample.

    Args:
        pred: the (registered) model's predictions frame.
        targets: targets to score.
        baseline: the polynomial baseline's predictions, or None.
        ceilings: ``{kind: {target: R²}}``, kinds such as ``ceiling`` (label noise),
            ``oracle`` (image oracle) and ``oracle r2within`` (see :func:`ceiling_name`).
        seed_preds: predictions of the same model trained with each seed (``pred``
            among them); the CNN's metrics are then their mean.
    """
    frames = {CNN: pred, **({BASELINE: baseline} if baseline is not None else {})}
    frames[SAMPLE_MEAN] = sample_mean_predictions(pred, targets)
    per_split = {m: per_split_table(f, targets) for m, f in frames.items()}
    per_sample = {m: per_sample_table(f, targets) for m, f in frames.items()}
    per_seed: dict[int, pd.DataFrame] = {}
    spread = None
    if seed_preds and len(seed_preds) > 1:
        per_seed = {int(s): per_split_table(f, targets) for s, f in seed_preds.items()}
        stacked = pd.concat(per_seed.values(), keys=list(per_seed))
        per_split[CNN] = stacked.groupby(level=1, sort=False).mean()
        spread = stacked.groupby(level=1, sort=False).std(ddof=1)
        samples = pd.concat([per_sample_table(f, targets) for f in seed_preds.values()])
        per_sample[CNN] = samples.groupby(level=0, sort=False).mean()
    kinds = {kind: {t: float(v[t]) for t in targets if t in v} for kind, v in (ceilings or {}).items()}
    kinds = {k: v for k, v in kinds.items() if v}
    metrics: dict[str, float] = {}
    for model in frames:
        metrics.update(flat_metrics(per_split[model], per_sample[model], PREFIX[model]))
    if spread is not None:
        for split, row in spread.iterrows():
            for t in targets:
                if np.isfinite(row[f"r2_{t}"]):
                    metrics[f"{split}/r2sd_{t}"] = float(row[f"r2_{t}"])
    for kind, values in kinds.items():
        metrics.update({ceiling_name(kind, t): v for t, v in values.items()})
    ev = Evaluation(list(targets), per_split, per_sample, kinds, metrics, seeds=list(seed_preds or []))
    ev.per_seed, ev.spread = per_seed, spread
    ev.headline = headline_metrics(ev)
    return ev


def ceiling_name(kind: str, target: str) -> str:
    """Metric name of a ceiling: ``ceiling/r2_md``; kind ``"oracle r2within"``:
    ``oracle/r2within_md``."""
    name, _, metric = kind.partition(" ")
    return f"{name}/{metric or 'r2'}_{target}"


def headline_metrics(ev: Evaluation, split: str = HEADLINE_SPLIT) -> dict[str, dict[str, float]]:
    """The DVC metrics, ``{target: {"r2", "oracle"}}``: the CNN's R² on ``split`` (mean
    over seeds) and the image-oracle ceiling (phantom stores only), rounded to 3 decimals.

    Few short keys, the same in every target's file: ``dvc metrics show`` prints one row
    per file and one column per key, and must fit 130 columns beside xai_eval's headline.
    """
    out = {}
    for t in ev.targets:
        names = {k: m.format(split=split, t=t) for k, m in HEADLINE.items()}
        out[t] = {k: round(ev.metrics[m], 3) for k, m in names.items() if m in ev.metrics}
    return out


def comparison_table(ev: Evaluation) -> pd.DataFrame:
    """Rows (target, split) for val/test/out; columns: the CNN's ``r2`` (and its SD over
    seeds), ``ev`` and ``r2within``; ``r2`` and ``r2within`` of the baseline; ``r2`` of
    the sample-mean shortcut; the ceilings."""
    rows = {}
    cnn = ev.per_split[CNN]
    for t in ev.targets:
        for split in COMPARED_SPLITS:
            if split not in cnn.index:
                continue
            row = {"CNN r2": cnn.at[split, f"r2_{t}"]}
            if ev.spread is not None:
                row["± sd"] = ev.spread.at[split, f"r2_{t}"]
            row.update({"CNN ev": cnn.at[split, f"ev_{t}"], "CNN r2within": cnn.at[split, f"r2within_{t}"]})
            if BASELINE in ev.per_split:
                row["polynomial r2"] = ev.per_split[BASELINE].at[split, f"r2_{t}"]
                row["polynomial r2within"] = ev.per_split[BASELINE].at[split, f"r2within_{t}"]
            row["sample-mean r2"] = ev.per_split[SAMPLE_MEAN].at[split, f"r2_{t}"]
            for kind, values in ev.ceilings.items():
                row[kind] = values.get(t, np.nan)
            rows[(label(t), split)] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index = pd.Index([f"{t}, {s}" for t, s in frame.index], name="target, split")
    return frame


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
    cols = {f"{m}_{t}": f"{m} {t}" for t in targets for m in ("r2", "ev", "r2within", "mse", "mae")}
    view = table[list(cols)].rename(columns=cols)
    view["n"] = table[f"n_{targets[0]}"].astype(int)
    return view


def _sample_view(table: pd.DataFrame, targets: Sequence[str]) -> pd.DataFrame:
    cols = {f"{g}/{m}_{t}": f"{m} {t} {g}" for t in targets for g in ("in", "out") for m in ("r2", "ev")}
    view = table[list(cols)].rename(columns=cols)
    view["n in"], view["n out"] = table["n_in"].astype(int), table["n_out"].astype(int)
    return view


def render_markdown(
    ev: Evaluation, info: Mapping[str, object], notes: Sequence[str], figures: Sequence[str]
) -> str:
    """``report.md`` text: run info, comparison, per-split and per-sample tables, figures."""
    out = [f"# Evaluation: {info.get('model', 'model')}", ""]
    out += [f"- {k}: `{v}`" for k, v in info.items() if v not in (None, "")]
    seeds = f" (mean over seeds {ev.seeds})" if len(ev.seeds) > 1 else ""
    out += ["", f"## CNN{seeds} vs baselines vs ceilings", "", markdown_table(comparison_table(ev)), ""]
    out += [
        "- `r2`: coefficient of determination 1 − SS_res/SS_tot; `ev`: explained variance "
        "1 − var(y − ŷ)/var(y) (the thesis' R², Eq. 3.2); `r2within`: R² after removing each "
        "sample's mean from y and ŷ (predicting the sample's mean scores 0).",
        "- sample-mean: each patch predicted by its sample's training mean (the shortcut of "
        "recognising the sample; the pooled training mean for samples without training patches).",
    ]
    out += [f"- {n}" for n in notes] + [""]
    if ev.per_seed:
        table = pd.concat(
            {s: t[[f"r2_{x}" for x in ev.targets]] for s, t in ev.per_seed.items()}, names=["seed", "split"]
        )
        table.index = pd.Index([f"{s} {sp}" for s, sp in table.index], name="seed, split")
        out += ["## CNN per seed (r2)", "", markdown_table(table), ""]
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
    "metrics", "all_metrics.json", "report.md", "per_split.csv", "per_sample.csv", "per_seed.csv",
    "baseline_predictions.parquet", "plots", "metrics.json",
)  # fmt: skip
"""Everything :func:`write_report` may write into a report directory (and ``metrics.json``,
the headline file of earlier versions, removed when found)."""


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

    Contents: ``metrics/<target>.json`` (the headline numbers, DVC metrics),
    ``all_metrics.json`` (every metric, flat, as logged to MLflow), ``report.md``, ``per_split.csv``,
    ``per_sample.csv``, ``per_seed.csv`` (the CNN per seed; empty for one seed),
    ``baseline_predictions.parquet`` (with a baseline) and
    ``plots/scatter_<t>.png``, ``plots/maps_<sample>.png``.
    """
    info = dict(info or {})
    name = str(info.get("model", ""))
    with atomic_files(out_dir, REPORT_FILES) as tmp:
        plots = tmp / "plots"
        plots.mkdir(parents=True)
        figures = []
        frames = {CNN: pred, **({BASELINE: baseline} if baseline is not None else {})}
        for t in ev.targets:
            title = f"{name}: predicted vs measured {label(t)}"
            caps = ", ".join(f"{k} {v[t]:.3f}" for k, v in ev.ceilings.items() if t in v)
            if caps:
                title += f" (R² {caps})"
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
        (tmp / "metrics").mkdir()
        for t, numbers in ev.headline.items():
            write_json(tmp / "metrics" / f"{t}.json", numbers)
        write_json(tmp / "all_metrics.json", ev.metrics)
        split_tables = dict(ev.per_split)
        if ev.spread is not None:
            split_tables["CNN sd over seeds"] = ev.spread
        _long(split_tables).to_csv(tmp / "per_split.csv")
        _long(ev.per_sample).to_csv(tmp / "per_sample.csv")
        seeds = pd.concat(ev.per_seed, names=["seed"]) if ev.per_seed else pd.DataFrame()
        seeds.to_csv(tmp / "per_seed.csv")
        if baseline is not None:
            baseline.to_parquet(tmp / "baseline_predictions.parquet", index=False)
        (tmp / "report.md").write_text(render_markdown(ev, info, notes, figures))
    return Path(out_dir)


def _long(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat({m: t for m, t in tables.items()}, names=["model"])
