"""Write the XAI evaluation of one model: ``metrics.json`` (flat, DVC metrics),
``ranking.json`` (per target: methods best first; the dashboard shows it),
``report.md``, CSV tables and PNG plots.

Metric keys are ``<target>/<method>/<metric>``, e.g. ``md/gradcampp/auroc``; the
baselines appear as methods ``random`` and ``sobel``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from histoxai.io import atomic_path, write_json, write_text  # noqa: E402
from histoxai.xai_eval.faithfulness import fractions  # noqa: E402
from histoxai.xai_eval.ranking import METRICS, RANKING_RULE, rank_methods  # noqa: E402
from histoxai.xai_eval.suite import BASELINES, TargetResult  # noqa: E402
from histoxai.xai_eval.tissue import TISSUE_CLASSES  # noqa: E402


def flat_metrics(results: Mapping[str, TargetResult]) -> dict[str, float]:
    """``<target>/<method>/<metric>`` -> value (finite values only)."""
    out: dict[str, float] = {}
    for target, res in results.items():
        for method, row in res.summary.iterrows():
            for metric, value in row.items():
                if value is not None and np.isfinite(value):
                    out[f"{target}/{method}/{metric}"] = float(value)
        for _, row in res.agreement.iterrows():
            for k in ("variant_rank_corr", "variant_ssim"):
                out[f"{target}/{row['a']}_vs_{row['b']}/{k}"] = float(row[k])
        if res.shortcut is not None:
            for _, row in res.shortcut.iterrows():
                out[f"{target}/{row['method']}/border_ratio"] = float(row["ratio"])
    return out


def ranking(results: Mapping[str, TargetResult]) -> dict:
    """The ``ranking.json`` content: rule, and per target the trusted method, the
    ordered methods and the baselines' values."""
    out: dict = {"rule": RANKING_RULE, "targets": {}}
    for target, res in results.items():
        table = res.summary.loc[res.methods]
        random = res.summary.loc["random"].to_dict() if "random" in res.summary.index else {}
        edges = res.summary.loc["sobel"].to_dict() if "sobel" in res.summary.index else {}
        ordered = rank_methods(table, random, res.passes_sanity, edges)
        out["targets"][target] = {
            "trusted": ordered[0]["method"] if ordered else None,
            "methods": ordered,
            "baselines": {
                b: {k: _json_float(v) for k, v in res.summary.loc[b].items()}
                for b in BASELINES
                if b in res.summary.index
            },
        }
    return out


def write_report(
    out_dir: str | Path, results: Mapping[str, TargetResult], info: Mapping[str, object]
) -> Path:
    """Write everything into ``out_dir`` (replaced atomically as a whole).

    Args:
        out_dir: e.g. ``reports/xai_eval/mdfa``.
        results: target -> :class:`TargetResult`.
        info: model/run facts listed at the top of the report.

    Returns:
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    rank = ranking(results)
    with atomic_path(out_dir) as tmp:
        (tmp / "plots").mkdir(parents=True)
        write_json(tmp / "metrics.json", flat_metrics(results))
        write_json(tmp / "ranking.json", rank)
        for target, res in results.items():
            res.summary.rename_axis("method").to_csv(tmp / f"summary_{target}.csv")
            res.per_patch.to_csv(tmp / f"per_patch_{target}.csv", index=False)
            binned_table(res).to_csv(tmp / f"shares_by_bin_{target}.csv", index=False)
            plot_curves(res, tmp / "plots" / f"curves_{target}.png")
            plot_shares(res, tmp / "plots" / f"shares_{target}.png")
            plot_binned(res, tmp / "plots" / f"shares_by_bin_{target}.png")
            if res.cascade:
                plot_cascade(res, tmp / "plots" / f"randomisation_{target}.png")
        write_text(tmp / "report.md", report_markdown(results, rank, info))
    return out_dir


def binned_table(res: TargetResult) -> pd.DataFrame:
    """Long table of attribution shares per bin: method, by (``target``/``error``), bin,
    n, lo, hi and one column per tissue class."""
    parts = []
    for method, tables in res.binned.items():
        for by, t in tables.items():
            if len(t):
                t = t.rename(columns={t.columns[0]: "bin"})
                parts.append(t.assign(method=method, by=by))
    cols = ["method", "by", "bin", "n", "lo", "hi", *TISSUE_CLASSES]
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)


# --------------------------------------------------------------------------- markdown


def _json_float(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, (float, np.floating)):
        return "–" if not np.isfinite(value) else f"{value:.3g}"
    return str(value)


def markdown_table(frame: pd.DataFrame, index: str | None = None) -> str:
    """A GitHub markdown table of ``frame`` (index included under ``index`` if named)."""
    if index is not None:
        frame = frame.rename_axis(index).reset_index()
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def report_markdown(results: Mapping[str, TargetResult], rank: dict, info: Mapping[str, object]) -> str:
    lines = ["# XAI evaluation", ""]
    lines += [f"- **{k}**: {v}" for k, v in info.items() if v not in (None, "")]
    lines += ["", "## How the method to trust is chosen", "", rank["rule"], ""]
    lines += [
        "Directions: " + ", ".join(f"`{m}` {'↑' if up else '↓'}" for m, (_, up) in METRICS.items()) + ".",
        "Baselines: `random` (fresh uniform noise per call: chance) and `sobel` (edge magnitude, "
        "independent of the model). Faithfulness curves are |Δŷ| in the target's units.",
        "Localisation and faithfulness rank pixels by the configured relevance (see `relevance` above; "
        "default |map|); tied values and flat maps score chance. Tissue shares count the positive "
        "attribution of the raw map (a map without any counts as uniform: its area shares); the shortcut "
        "check counts |map|.",
        "",
    ]
    for target, res in results.items():
        entry = rank["targets"][target]
        lines += [f"## {target}", "", f"**Method to trust: `{entry['trusted']}`**", ""]
        order = pd.DataFrame(
            [
                {"rank": r["rank"], "method": r["method"], "score": r["score"],
                 "beats random": f"{r['beats_random']}/{r['n_metrics']}",
                 "beats edges": f"{r['beats_edges']}/{r['n_metrics']}",
                 "sanity": ("pass" if r["passes_sanity"] else "FAIL") if r["sanity_checked"] else "not run"}
                for r in entry["methods"]
            ]
        )  # fmt: skip
        lines += [markdown_table(order), "", "### Metrics (means over patches)", ""]
        cols = [c for c in METRICS if c in res.summary.columns]
        lines += [markdown_table(res.summary[cols], "method"), ""]
        lines += ["### Attribution share per tissue class", ""]
        shares = pd.DataFrame({m: v["attribution"] for m, v in res.shares.items()}).T
        area = next(iter(res.shares.values()))["area"] if res.shares else {}
        shares.loc["(area)"] = pd.Series(area)
        lines += [markdown_table(shares[list(TISSUE_CLASSES)], "method"), ""]
        table = binned_table(res)
        for by, title in (("target", f"measured {target}"), ("error", "|ŷ − y|")):
            part = table[table["by"] == by]
            if len(part):
                pivot = part.pivot(index="method", columns="bin", values="nuclei").reindex(list(res.binned))
                pivot = pivot[list(dict.fromkeys(part["bin"]))]
                lines += [f"Nuclei share by {title} bin (all classes: `shares_by_bin_{target}.csv`):", ""]
                lines += [markdown_table(pivot, "method"), ""]
        if res.cascade:
            lines += ["### Randomisation cascade (mean Spearman ρ, head → stem)", ""]
            casc = pd.DataFrame(
                {m: {s: v["rank_corr"] for s, v in steps.items()} for m, steps in res.cascade.items()}
            )
            lines += [markdown_table(casc.T, "method"), ""]
        if not res.agreement.empty:
            lines += ["### Agreement between variants of a method", "", markdown_table(res.agreement), ""]
        if res.shortcut is not None:
            lines += [
                "### Shortcut: attribution on the border band (cue) vs its area",
                "",
                markdown_table(res.shortcut),
                "",
            ]
        lines += [
            f"Plots: `plots/curves_{target}.png`, `plots/shares_{target}.png`, "
            f"`plots/shares_by_bin_{target}.png`"
            + (f", `plots/randomisation_{target}.png`" if res.cascade else ""),
            "",
        ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- plots


def _style(method: str) -> dict:
    return (
        {"linestyle": "--", "color": "grey" if method == "random" else "black"} if method in BASELINES else {}
    )


def plot_curves(res: TargetResult, path: Path) -> None:
    """Mean deletion / insertion / ROAD curves per method."""
    titles = {"deletion": "deletion (↑ early)", "insertion": "insertion (↓ early)",
              "road_morf": "ROAD MoRF (↑)", "road_lerf": "ROAD LeRF (↓)"}  # fmt: skip
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6), sharex=True)
    for ax, (mode, title) in zip(axes, titles.items()):
        for method, curves in res.curves.items():
            c = curves[mode]
            ax.plot(fractions(len(c) - 1).numpy(), c, label=method, **_style(method))
        ax.set(title=title, xlabel="fraction of pixels perturbed", ylabel=f"|Δŷ| ({res.target})")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_shares(res: TargetResult, path: Path) -> None:
    """Stacked bars: attribution share per tissue class per method, and the area share."""
    names = list(res.shares)
    data = [res.shares[m]["attribution"] for m in names] + [res.shares[names[0]]["area"]] if names else []
    labels = names + ["(area)"] if names else []
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(labels), 3.6))
    bottom = np.zeros(len(labels))
    for cls in TISSUE_CLASSES:
        vals = np.nan_to_num([d[cls] for d in data])
        ax.bar(labels, vals, bottom=bottom, label=cls)
        bottom += vals
    ax.set(ylabel="positive attribution share", title=f"{res.target}: what the maps point at")
    ax.tick_params(axis="x", rotation=45)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_binned(res: TargetResult, path: Path) -> None:
    """Nuclei / stroma / air shares across target-value bins and error bins, per method."""
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), sharey=True)
    for row, key in enumerate(("target", "error")):
        for col, cls in enumerate(TISSUE_CLASSES[:3]):
            ax = axes[row, col]
            for method, tables in res.binned.items():
                t = tables[key]
                if len(t):
                    ax.plot(0.5 * (t["lo"] + t["hi"]), t[cls], marker="o", label=method, **_style(method))
            ax.set(title=f"{cls} share by {'measured ' + res.target if key == 'target' else '|Δ|'} bin",
                   xlabel=res.target if key == "target" else f"|ŷ − y| ({res.target})")  # fmt: skip
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_cascade(res: TargetResult, path: Path) -> None:
    """Similarity of maps to the trained model's maps along the randomisation cascade."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharex=True)
    for ax, key in zip(axes, ("rank_corr", "ssim")):
        for method, steps in res.cascade.items():
            ax.plot(list(steps), [v[key] for v in steps.values()], marker="o", label=method, **_style(method))
        ax.set(title=f"{res.target}: {'Spearman ρ' if key == 'rank_corr' else 'SSIM'} vs trained model",
               xlabel="randomised down to", ylim=(-1.05, 1.05))  # fmt: skip
        ax.tick_params(axis="x", rotation=45)
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
