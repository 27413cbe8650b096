"""The Main page: what is loaded (dataset, models, targets, methods, patch counts), the
models' R² per split and sample, the explanation ranking when present, links to pages."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd
from dash import dcc, html

from histoxai.dashboard.catalog import Catalog
from histoxai.dashboard.pages import fmt, problems_panel
from histoxai.dashboard.performance import SPLIT_ORDER, r2_from_meta, r2_tables
from histoxai.dashboard.sitemap import PAGES

_SKIP_MANIFEST = {"patch_ids", "complete", "variants", "targets", "timings", "model_name", "model_version"}


def main_page(catalog: Catalog, search: str) -> list:
    return [
        html.Div(
            [html.H2("histoxai dashboard"), html.Span("what is loaded", className="sub")],
            className="page-heading",
        ),
        problems_panel(catalog) or html.Div(),
        html.Div(
            [
                dcc.Link(
                    [html.Strong(p.name), html.Span(p.description)],
                    href=p.path + (search or ""),
                    className="card link-card",
                )
                for p in PAGES.values()
                if p.build is not None
            ],
            className="cards links",
        ),
        html.Div(
            [_dataset_card(catalog), *[_source_card(catalog, n) for n in catalog.sources]], className="cards"
        ),
        *_performance(catalog),
        *_rankings(catalog),
    ]


MAIN_METRICS = 3
"""Metric columns of a ranking table shown at once; the others are under "all metrics"."""


def _dataset_card(catalog: Catalog) -> html.Div:
    store = catalog.patches
    if store is None:
        return _card("Dataset", [html.P(f"no patch store at {catalog.paths.get('patches')}")])
    card = store.card
    facts = {
        "source": card.get("source", "?"),
        "store": str(store.root),
        "patches": f"{len(store):,} of {store.patch_size} px",
        "samples": ", ".join(store.samples),
        "targets": ", ".join(store.targets),
    }
    splits = [c for c in store.index.columns if c.startswith("split_")]
    counts = pd.DataFrame({c[6:]: store.index[c].value_counts() for c in splits}).T.fillna(0).astype(int)
    counts = counts[sorted(counts.columns, key=lambda s: SPLIT_ORDER.get(s, 9))]
    return _card("Dataset", [_facts(facts), _table(counts, "split scheme") if splits else None])


def _source_card(catalog: Catalog, name: str) -> html.Div:
    store = catalog.sources[name]
    m = store.manifest
    facts = {
        "model": m.get("model_name") or str(m.get("model_uri", "?")).removeprefix("models:/").split("/")[0],
        "version": m.get("model_version", "?"),
        **{k: v for k, v in m.items() if k not in _SKIP_MANIFEST and isinstance(v, (str, int, float))},
        "store": str(store.root),
        "targets": ", ".join(store.targets),
    }
    meta = store.meta.drop_duplicates("patch_id")
    counts = meta["split"].astype(str).value_counts().rename("patches").to_frame().T
    counts = counts[sorted(counts.columns, key=lambda s: SPLIT_ORDER.get(s, 9))]
    variants = pd.DataFrame(
        [
            {
                "variant": v,
                "method": spec.get("method", v),
                "params": ", ".join(f"{k}={p}" for k, p in (spec.get("params") or {}).items()) or "–",
                "targets": ", ".join(t for t in store.targets if store.is_complete(t, v)) or "none yet",
            }
            for v, spec in store.variants.items()
        ]
    )
    return _card(
        f"Saliency · {name}",
        [_facts(facts), _table(counts, "explained"), _table(variants.set_index("variant"), "variant")],
    )


def _performance(catalog: Catalog) -> list:
    blocks = []
    for name, metrics in catalog.metrics.items():
        splits, samples = r2_tables(metrics)
        if not splits.empty or not samples.empty:
            blocks.append(_r2_card(name, splits, samples, None))
    for name, store in catalog.sources.items():
        if name not in catalog.metrics:
            note = "from the explained patches (no reports/evaluate/…/all_metrics.json found)"
            blocks.append(_r2_card(name, *r2_from_meta(store.meta), note))
    if not blocks:
        return []
    return [html.H3("Model performance (R²)", className="section-title"), html.Div(blocks, className="cards")]


def _r2_card(name: str, splits: pd.DataFrame, samples: pd.DataFrame, note: str | None) -> html.Div:
    return _card(
        f"R² · {name}",
        [
            html.P(note, className="note") if note else None,
            _table(splits, "split", digits=True) if not splits.empty else None,
            _table(samples, "sample", digits=True) if not samples.empty else None,
        ],
    )


def _rankings(catalog: Catalog) -> list:
    if not catalog.rankings:
        return []
    cards = [
        _card(f"Explanation ranking · {name}", [*_ranking(obj, catalog), *_shares(catalog, name)])
        for name, obj in catalog.rankings.items()
    ]
    return [html.H3("Explanation quality", className="section-title"), html.Div(cards, className="cards")]


def _shares(catalog: Catalog, name: str) -> list:
    """The report's tissue-share charts (attribution per tissue class, per method)."""
    paths = catalog.figures.get(name, [])
    return (
        [
            html.Details(
                [
                    html.Summary("attribution per tissue class"),
                    *[
                        html.Img(src=f"/img/report/{name}/{i}.png", className="report-figure", alt=p.name)
                        for i, p in enumerate(paths)
                    ],
                ],
                className="more",
                open=True,
            )
        ]
        if paths
        else []
    )


def _method_link(catalog: Catalog, target: str, method: str):
    """The method's name, linking to its grid when the dashboard has its maps."""
    key = next(
        (k for k, t in catalog.tables.items() if t.target == target and method in catalog.variants(k)), None
    )
    if key is None:
        return method
    return dcc.Link(method, href=f"/single?target={key}&variant={method}", className="method-link")


def _ranking(obj: Any, catalog: Catalog) -> list:
    """``ranking.json`` of ``histoxai xai_eval``: per target the methods best first."""
    if not isinstance(obj, dict) or not isinstance(obj.get("targets"), dict):
        return [html.Pre(json.dumps(obj, indent=1)[:4000], className="raw")]
    out: list = []
    for target, entry in obj["targets"].items():
        methods = entry.get("methods") or []
        rows = [
            {
                "method": m.get("method"),
                "score": m.get("score"),
                "sanity": "passed" if m.get("passes_sanity", True) else "failed",
                "beats random": f"{m.get('beats_random', '?')}/{m.get('n_metrics', '?')}",
                **{k: v for k, v in (m.get("metrics") or {}).items() if isinstance(v, (int, float))},
            }
            for m in methods
        ]
        out.append(html.H4(f"{target}: trust {entry.get('trusted') or '–'}"))
        if rows:
            frame = pd.DataFrame(rows).set_index("method")
            shown = list(frame.columns[: 3 + MAIN_METRICS])
            table = _table(frame[shown], "method", digits=True)
            for tr, method in zip(table.children[1].children, frame.index):
                tr.children[0].children = _method_link(catalog, str(target), str(method))
            out.append(table)
            if len(frame.columns) > len(shown):
                out.append(
                    html.Details(
                        [
                            html.Summary(f"all {len(frame.columns) - 3} metrics"),
                            html.Div(_table(frame, "method", digits=True), className="wide"),
                        ],
                        className="more",
                    )
                )
    if obj.get("rule"):
        out.append(html.P(str(obj["rule"]), className="note"))
    return out


def _card(title: str, children: list) -> html.Div:
    return html.Div([html.H3(title), *[c for c in children if c is not None]], className="card")


def _facts(facts: dict) -> html.Table:
    return html.Table([html.Tr([html.Th(k), html.Td(str(v))]) for k, v in facts.items()], className="facts")


def _table(df: pd.DataFrame, index_name: str | None, digits: bool = False) -> html.Table:
    def cell(v):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            text = (fmt(v) if math.isfinite(v) else "–") if digits and isinstance(v, float) else str(v)
            return html.Td(text, className="num")
        return html.Td(str(v))

    numeric = {c: pd.api.types.is_numeric_dtype(df[c]) for c in df.columns}
    head = [html.Th(index_name or "")] if index_name is not None else []
    # a zero-width space after "_" lets long metric names wrap at their parts
    head += [
        html.Th(str(c).replace("_", "_\u200b"), className="num" if numeric[c] else None) for c in df.columns
    ]
    body = [
        html.Tr(([html.Th(str(i))] if index_name is not None else []) + [cell(v) for v in row])
        for i, row in zip(df.index, df.itertuples(index=False))
    ]
    return html.Table([html.Thead(html.Tr(head)), html.Tbody(body)], className="data")
