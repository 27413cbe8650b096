"""The Main page: what is loaded (dataset, models, targets, methods, patch counts), the
models' R² per split and sample, the explanation ranking when present, links to pages."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from dash import dcc, html

from dashboard.catalog import Catalog, r2_from_meta, r2_table
from dashboard.pages import fmt, problems_panel
from dashboard.state import PAGES

_SKIP_MANIFEST = {"patch_ids", "complete", "variants", "targets", "timings", "model_name", "model_version"}
_SPLIT_ORDER = {"train": 0, "val": 1, "test": 2, "out": 3}
_DESCRIPTIONS = {
    "/single": "a grid of patches for one target and one method variant",
    "/targets": "the same patches, one column per target, same method",
    "/methods": "the same patches, one column per method variant, same target",
}


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
                    [html.Strong(PAGES[p]), html.Span(d)], href=p + (search or ""), className="card link-card"
                )
                for p, d in _DESCRIPTIONS.items()
            ],
            className="cards links",
        ),
        html.Div(
            [_dataset_card(catalog), *[_source_card(catalog, n) for n in catalog.sources]], className="cards"
        ),
        *_performance(catalog),
        *_rankings(catalog),
    ]


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
    counts = counts[sorted(counts.columns, key=lambda s: _SPLIT_ORDER.get(s, 9))]
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
    counts = counts[sorted(counts.columns, key=lambda s: _SPLIT_ORDER.get(s, 9))]
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
        table = r2_table(metrics)
        if not table.empty:
            blocks.append(
                _card(f"R² · {name}", [_table(_order_scopes(table), "split / sample", digits=True)])
            )
    reported = set(catalog.metrics)
    for name, store in catalog.sources.items():
        if name not in reported:
            table = _order_scopes(r2_from_meta(store.meta))
            note = html.P(
                "from the explained patches (no reports/evaluate/…/metrics.json found)", className="note"
            )
            blocks.append(_card(f"R² · {name}", [note, _table(table, "split / sample", digits=True)]))
    if not blocks:
        return []
    return [html.H3("Model performance (R²)", className="section-title"), html.Div(blocks, className="cards")]


def _order_scopes(table: pd.DataFrame) -> pd.DataFrame:
    key = lambda s: (_SPLIT_ORDER.get(s.split("/")[0], 9), s.count("/"), s)  # noqa: E731
    return table.loc[sorted(table.index, key=key)]


def _rankings(catalog: Catalog) -> list:
    if not catalog.rankings:
        return []
    cards = [_card(f"Explanation ranking · {name}", [_any(obj)]) for name, obj in catalog.rankings.items()]
    return [html.H3("Explanation quality", className="section-title"), html.Div(cards, className="cards")]


def _any(obj: Any):
    """A ranking of unknown shape: list of records or mapping of lists -> table, else key/values."""
    if isinstance(obj, dict):
        lists = {k: v for k, v in obj.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
        if lists:
            return html.Div([html.Div([html.H4(k), _any(v)]) for k, v in lists.items()])
        return _facts({k: v for k, v in obj.items() if not isinstance(v, (dict, list))})
    if isinstance(obj, list) and obj and all(isinstance(r, dict) for r in obj):
        return _table(pd.DataFrame(obj), None, digits=True)
    return html.Pre(str(obj))


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
    head += [html.Th(str(c), className="num" if numeric[c] else None) for c in df.columns]
    body = [
        html.Tr(([html.Th(str(i))] if index_name is not None else []) + [cell(v) for v in row])
        for i, row in zip(df.index, df.itertuples(index=False))
    ]
    return html.Table([html.Thead(html.Tr(head)), html.Tbody(body)], className="data")
