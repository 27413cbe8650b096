"""Write the XAI evaluation of one model into its report directory.

Files (each written to a temporary name and renamed; the directory itself and
anything else in it, e.g. DVC's ``.gitignore``, are left alone; every file is declared
in ``dvc.yaml``):

- ``metrics/<target>.json``: the headline (DVC metrics, one small file per target so
  ``dvc metrics show`` fits 130 columns): the verdict's top method (or ``tie``/``none``),
  the leader's native map resolution, primary score with interval and normalised score.
- ``ranking.json``: the pooled training seeds and per target the verdict and the
  methods in order (the dashboard).
- ``report.md``: the verdict, rule, per-property tables, tissue shares, sanity cascade,
  per-nucleus analysis.
- ``tables/``: CSV per target: ``stats_<t>.csv`` (every metric with intervals),
  ``per_patch_<t>.csv`` (a ``seed`` column: the training seed of the model whose maps a
  row scores), ``shares_by_bin_<t>.csv``, ``nuclei_<t>.csv``,
  ``nuclei_summary_<t>.csv``; ``plots/``: PNG per target.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from histoxai.io import atomic_files, write_json, write_text  # noqa: E402
from histoxai.xai_eval.faithfulness import fractions  # noqa: E402
from histoxai.xai_eval.nuclei import PROPERTIES, binned  # noqa: E402
from histoxai.xai_eval.ranking import VERDICT_RULE  # noqa: E402
from histoxai.xai_eval.registry import METRICS  # noqa: E402
from histoxai.xai_eval.suite import TargetResult  # noqa: E402
from histoxai.xai_eval.tissue import TISSUE_CLASSES  # noqa: E402

REFERENCES = ("random", "oracle", "sobel", "darkness")
HEADLINE_STATS: dict[str, str] = {"score": "mean", "lo": "lo", "hi": "hi", "norm": "norm_mean"}
"""The numbers of ``metrics/<target>.json`` (beside ``top``) and the verdict's statistic each holds."""


def headline(res: TargetResult) -> dict:
    """The DVC metrics of one target (``metrics/<target>.json``, a handful of short keys
    so ``dvc metrics show`` stays within 130 columns beside evaluate's ``r2``/``oracle``):
    ``top`` (the method the verdict names, else its status, ``tie`` or ``none``), and the
    leader's native map resolution ``res`` (``8x8``), ``score``/``lo``/``hi`` (primary
    score and interval) and ``norm`` (oracle-normalised at that resolution)."""
    v = res.verdict
    leader = v.get("top")
    entry: dict = {"top": leader if v.get("status") == "method" else v.get("status") or "none"}
    if leader in res.rows:
        entry["res"] = "x".join(map(str, res.rows[leader]["resolution"]))
    prop = v.get("properties", {}).get(_fam(v), {})
    stats = prop.get("methods", {}).get(leader, {}) if leader else {}
    for key, src in HEADLINE_STATS.items():
        if stats.get(src) is not None:
            entry[key] = round(float(stats[src]), 3)
    return entry


def flat_metrics(results: Mapping[str, TargetResult]) -> dict[str, float]:
    """``<target>/<row>/<metric>`` -> mean, ``..._norm`` -> normalised mean (finite
    only; logged to MLflow, whose names allow no ``@`` or ``|``: ``random@8x8`` becomes
    ``random_8x8``, ``sg|abs`` ``sg_abs``)."""
    out: dict[str, float] = {}
    for target, res in results.items():
        for _, r in res.stats.iterrows():
            name = re.sub(r"[^\w\-. :/]", "_", str(r["method"]))
            if np.isfinite(r["mean"]):
                out[f"{target}/{name}/{r['metric']}"] = float(r["mean"])
            if np.isfinite(r.get("norm_mean", np.nan)):
                out[f"{target}/{name}/{r['metric']}_norm"] = float(r["norm_mean"])
    return out


def ranking(results: Mapping[str, TargetResult]) -> dict:
    """``ranking.json``: rule, the training seeds whose models' maps are pooled
    (``seeds``, the registered model's first) and per target the verdict and the
    ordered methods."""
    seeds = next((r.seeds for r in results.values() if r.seeds), [])
    out: dict = {"rule": VERDICT_RULE, "seeds": list(seeds), "targets": {}}
    for target, res in results.items():
        v = res.verdict
        methods = []
        for m in v.get("order", []):
            metrics = {p: e["methods"][m]["mean"] for p, e in v["properties"].items() if m in e["methods"]}
            methods.append({"method": m, "score": v["properties"][_fam(v)]["methods"][m]["p_top"],
                            "passes_sanity": res.passes_sanity.get(m, True), "sanity_checked": m in res.passes_sanity,
                            "sanity_by_seed": {str(k): ok for k, ok in res.sanity_by_seed.get(m, {}).items()},
                            "resolution": res.rows[m]["resolution"], "metrics": metrics})  # fmt: skip
        out["targets"][target] = {"trusted": v.get("top") if v.get("status") == "method" else None,
                                  "status": v.get("status"), "verdict": v.get("text"), "tied": v.get("tied", []),
                                  "methods": methods, "properties": v.get("properties", {})}  # fmt: skip
    return out


def _fam(v: dict) -> str:
    return "localisation" if v.get("metric") == "mass_accuracy" else "faithfulness"


def write_report(
    out_dir: str | Path, results: Mapping[str, TargetResult], info: Mapping[str, object]
) -> list[Path]:
    """Write the report into ``out_dir`` (created if needed, never replaced) as one unit.

    Everything is built in a staging directory first and then moved in
    (:func:`histoxai.io.atomic_files`): a failure leaves the previous report whole, a kill
    while moving is finished by the next run. Files of an earlier report that this one does
    not write (within :data:`REPORT_FILES`) are removed. Returns every file written.
    """
    out_dir = Path(out_dir)
    rank = ranking(results)
    text = report_markdown(results, rank, info)
    with atomic_files(out_dir, REPORT_FILES) as tmp:
        tables, plots, metrics = (tmp / d for d in ("tables", "plots", "metrics"))
        for d in (tables, plots, metrics):
            d.mkdir(parents=True)
        for target, res in results.items():
            res.stats.to_csv(tables / f"stats_{target}.csv", index=False)
            res.per_patch.to_csv(tables / f"per_patch_{target}.csv", index=False)
            binned_table(res).to_csv(tables / f"shares_by_bin_{target}.csv", index=False)
            res.nuclei.to_csv(tables / f"nuclei_{target}.csv", index=False)
            res.nuclei_summary.to_csv(tables / f"nuclei_summary_{target}.csv", index=False)
            write_json(metrics / f"{target}.json", headline(res))
            plot_curves(res, plots / f"curves_{target}.png")
            plot_shares(res, plots / f"shares_{target}.png")
            plot_binned(res, plots / f"shares_by_bin_{target}.png")
            plot_properties(res, plots / f"properties_{target}.png")
            if res.cascade:
                plot_cascade(res, plots / f"randomisation_{target}.png")
            if len(res.nuclei):
                plot_nuclei(res, plots / f"nuclei_{target}.png")
        write_json(tmp / "ranking.json", rank)
        write_text(tmp / "report.md", text)
    return [out_dir / f for f in ("ranking.json", "report.md")] + sorted(
        p for d in ("metrics", "tables", "plots") for p in (out_dir / d).iterdir()
    )


REPORT_FILES = ("ranking.json", "report.md", "metrics", "tables", "plots")
"""Everything :func:`write_report` writes into a report directory."""


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


def _ci(mean, lo, hi) -> str:
    return f"{_fmt(mean)} [{_fmt(lo)}, {_fmt(hi)}]"


def property_table(res: TargetResult, family: str) -> pd.DataFrame:
    """Rows: methods then references; columns: each metric of ``family`` as
    ``mean [lo, hi]`` and, for normalised metrics, ``norm``; P(top) of the primary."""
    t = res.stats[res.stats["family"] == family] if len(res.stats) else pd.DataFrame()
    if not len(t):
        return pd.DataFrame()
    names = [m for m in res.rows if m in set(t["method"])]
    out = pd.DataFrame(index=names)
    out["kind"] = [res.rows[m]["kind"] for m in names]
    out["res"] = ["x".join(map(str, res.rows[m]["resolution"])) for m in names]
    for metric in dict.fromkeys(t["metric"]):
        part = t[t["metric"] == metric].set_index("method")
        meta = METRICS[metric]
        label = f"{metric} {'↑' if meta.higher else '↓'}" + (" (primary)" if meta.primary else "")
        out[label] = [_ci(*part.loc[m, ["mean", "lo", "hi"]]) if m in part.index else "–" for m in names]
        if meta.normalised:
            out[f"{metric} norm"] = [
                _ci(*part.loc[m, ["norm_mean", "norm_lo", "norm_hi"]])
                if m in part.index and res.rows[m]["kind"] == "method"
                else "–"
                for m in names
            ]
        if meta.primary:
            out["P(top)"] = [_fmt(part.loc[m, "p_top"]) if m in part.index else "–" for m in names]
            out["leader − row [CI]"] = [
                f"[{_fmt(part.loc[m, 'vs_leader_lo'])}, {_fmt(part.loc[m, 'vs_leader_hi'])}]"
                if m in part.index and np.isfinite(part.loc[m, "vs_leader_lo"])
                else "–"
                for m in names
            ]
    return out


def report_markdown(results: Mapping[str, TargetResult], rank: dict, info: Mapping[str, object]) -> str:
    lines = ["# XAI evaluation", ""]
    lines += [f"- **{k}**: {v}" for k, v in info.items() if v not in (None, "")]
    lines += ["", "## How the verdict is reached", "", rank["rule"], ""]
    lines += [
        "Relevance is signed: positive where a pixel's content supports a higher prediction (the map for "
        "score `higher`, its negation for `lower`); `|abs` rows, when present, are |map|. Every score comes "
        "with a 95 % cluster-bootstrap interval (samples resampled; with several training seeds, (seed, "
        "sample) cells: see **intervals and P(top)** above). `norm` = (s − random_res) / "
        "(oracle_res − random_res) against a smooth random map and the ground truth pooled to the method's "
        "native resolution `res` (1: as good as any map of that resolution can be; 0: chance). Reference rows: "
        "`random`/`oracle` at full and at each method's resolution (`@hxw`), `sobel` (edges) and `darkness` "
        "(1 − grey), both model-free.",
        "",
    ]
    for target, res in results.items():
        v = res.verdict
        lines += [f"## {target}", "", f"**Verdict: {v.get('text', '–')}.**", ""]
        if v.get("failed_sanity"):
            lines += [
                "Failed the randomisation sanity check: "
                + ", ".join(f"`{m}`{_failed_seeds(res, m)}" for m in v["failed_sanity"]),
                "",
            ]
        for family in ("localisation", "faithfulness", "randomisation", "robustness", "intervention"):
            table = property_table(res, family)
            if len(table):
                lines += [f"### {family.capitalize()}", "", markdown_table(table, "row"), ""]
        lines += ["### Positive relevance share per tissue class", ""]
        shares = pd.DataFrame({m: s["attribution"] for m, s in res.shares.items()}).T
        if res.shares:
            shares.loc["(area)"] = pd.Series(next(iter(res.shares.values()))["area"])
            lines += [markdown_table(shares[list(TISSUE_CLASSES)], "row"), ""]
        if res.cascade:
            draws = int(res.verdict.get("sanity_draws", 1))
            over = (f" over {draws} re-initialisation draws, ± their SD, and the largest draw's, which must be "
                    f"below {res_threshold(res):g} at every block" if draws > 1 else "")  # fmt: skip
            lines += [f"### Randomisation cascade (mean Spearman ρ of |map|{over}, head → stem)", ""]
            lines += [markdown_table(cascade_table(res), "method"), ""]
        if len(res.nuclei_summary):
            lines += ["### Per-nucleus relevance vs nucleus properties", "",
                      "ratio = a counted nucleus' share of positive relevance / its share of pixels; ρ = Spearman "
                      f"across nuclei (table `tables/nuclei_{target}.csv`).", "",
                      markdown_table(res.nuclei_summary.set_index("method"), "method"), ""]  # fmt: skip
        if not res.agreement.empty:
            lines += ["### Agreement between variants of a method", "", markdown_table(res.agreement), ""]
        if res.shortcut is not None:
            lines += ["### Shortcut: positive relevance on the border band (cue) vs its area", "",
                      markdown_table(res.shortcut), ""]  # fmt: skip
        lines += [
            f"Tables: `tables/stats_{target}.csv`, `tables/per_patch_{target}.csv`. Plots: `plots/*_{target}.png`.",
            "",
        ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- plots


def _style(method: str) -> dict:
    if method.split("@")[0] in REFERENCES:
        return {
            "linestyle": "--",
            "color": {"random": "grey", "oracle": "green"}.get(method.split("@")[0], "black"),
        }
    return {}


def plot_curves(res: TargetResult, path: Path) -> None:
    """Mean deletion / insertion / ROAD curves per method."""
    titles = {"deletion": "deletion (↑)", "insertion": "insertion gap (↓)",
              "road_morf": "ROAD MoRF (↑)", "road_lerf": "ROAD LeRF (↓)"}  # fmt: skip
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6), sharex=True)
    for ax, (mode, title) in zip(axes, titles.items()):
        for method, curves in res.curves.items():
            c = curves[mode]
            ax.plot(fractions(len(c) - 1).numpy(), c, label=method, **_style(method))
        ax.set(title=title, xlabel="fraction of pixels perturbed", ylabel=f"score drop ({res.target})")
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
    ax.set(ylabel="positive relevance share", title=f"{res.target}: what the maps point at")
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


def cascade_table(res: TargetResult) -> pd.DataFrame:
    """Mean Spearman ρ of |map| per method (rows) and randomised block (columns), as
    ``ρ ± SD (max M)`` over re-initialisation draws where there were several; with
    several trained models a row per (method, training seed): ``method · seed s``."""

    def cell(st: dict) -> float | str:
        sd = st.get("rank_corr_sd", 0.0)
        return (
            f"{st['rank_corr']:.2f} ± {sd:.2f} (max {st['rank_corr_max']:.2f})" if sd > 0 else st["rank_corr"]
        )

    return pd.DataFrame(
        {
            m if s is None else f"{m} · seed {s}": {step: cell(st) for step, st in steps.items()}
            for s, cascade in _cascades(res).items()
            for m, steps in cascade.items()
        }
    ).T


def _cascades(res: TargetResult) -> dict:
    """Training seed -> cascade with several trained models, else ``{None: res.cascade}``."""
    return res.cascade_by_seed if len(res.cascade_by_seed) > 1 else {None: res.cascade}


def _failed_seeds(res: TargetResult, method: str) -> str:
    """`` (on seed 1 of 0, 1, 2)`` or `` (on all 3 seeds)`` when several trained models
    were checked, else ``""``."""
    seeds = res.sanity_by_seed.get(method, {})
    failed = [str(s) for s, passed in seeds.items() if not passed]
    if len(seeds) < 2 or not failed:
        return ""
    if len(failed) == len(seeds):
        return f" (on all {len(seeds)} seeds)"
    return f" (on seed{'s' if len(failed) > 1 else ''} {', '.join(failed)} of {', '.join(map(str, seeds))})"


def plot_cascade(res: TargetResult, path: Path) -> None:
    """Similarity of maps to the trained model's maps along the randomisation cascade:
    the mean over draws with its SD, and ρ's largest draw (▼, what the gate reads);
    with several trained models a line per (method, seed): a colour per method, a line
    style per seed."""
    by_seed = _cascades(res)
    colours = {m: f"C{i % 10}" for i, m in enumerate(res.cascade)}
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharex=True)
    for ax, key in zip(axes, ("rank_corr", "ssim")):
        for (seed, cascade), dash in zip(by_seed.items(), ("-", "--", ":", "-.") * len(by_seed)):
            for method, steps in cascade.items():
                ax.errorbar(
                    list(steps),
                    [v.get(key, np.nan) for v in steps.values()],
                    yerr=[v.get("rank_corr_sd", 0.0) if key == "rank_corr" else 0.0 for v in steps.values()],
                    marker="o",
                    capsize=2,
                    label=method if seed is None else f"{method} · seed {seed}",
                    color=colours.get(method),
                    linestyle=dash,
                )
                if key == "rank_corr":  # the gate reads every draw: mark the largest
                    top = [v.get("rank_corr_max", np.nan) for v in steps.values()]
                    ax.plot(list(steps), top, linestyle="none", marker="v", color=colours.get(method))
        ax.axhline(res_threshold(res), color="red", linewidth=0.8)
        ax.set(title=f"{res.target}: {'Spearman ρ (▼ largest draw)' if key == 'rank_corr' else 'SSIM'} of |map| vs trained model",
               xlabel="randomised down to", ylim=(-1.05, 1.05))  # fmt: skip
        ax.tick_params(axis="x", rotation=45)
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def res_threshold(res: TargetResult) -> float:
    return float(res.verdict.get("sanity_threshold", 0.5))


def plot_properties(res: TargetResult, path: Path) -> None:
    """Primary metric per property with intervals: methods and references."""
    fams = [f for f in ("localisation", "faithfulness", "randomisation", "robustness") if len(res.stats) and
            ((res.stats["family"] == f) & res.stats["primary"]).any()]  # fmt: skip
    fig, axes = plt.subplots(1, max(1, len(fams)), figsize=(4.2 * max(1, len(fams)), 3.8), squeeze=False)
    for ax, fam in zip(axes[0], fams):
        t = res.stats[(res.stats["family"] == fam) & res.stats["primary"]]
        y = np.arange(len(t))
        ax.errorbar(t["mean"], y, xerr=[t["mean"] - t["lo"], t["hi"] - t["mean"]], fmt="o", capsize=3)
        ax.set_yticks(y, t["method"], fontsize=7)
        ax.set(title=f"{res.target}: {t['metric'].iloc[0]}", xlabel="mean [95 % CI]")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_nuclei(res: TargetResult, path: Path) -> None:
    """Per-nucleus relevance ratio against each nucleus property (binned means)."""
    fig, axes = plt.subplots(1, len(PROPERTIES), figsize=(3.6 * len(PROPERTIES), 3.4), sharey=True)
    for ax, prop in zip(axes, PROPERTIES):
        table = res.nuclei.assign(**{prop: res.nuclei[prop].astype(float)})
        for method, part in binned(table, prop).groupby("method", sort=False):
            ax.plot(0.5 * (part["lo"] + part["hi"]), part["ratio"], marker="o", label=method)
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
        ax.set(title=prop, xlabel=prop)
    axes[0].set_ylabel("relevance share / pixel share")
    axes[-1].legend(fontsize=6)
    fig.suptitle(f"{res.target}: per-nucleus relevance")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
