"""Exports of the current view: the filtered table as CSV and the current page of tiles
as a PNG or PDF figure with titles and a colour bar (the thesis' method x target figures
come from the Multiple methods / Multiple targets pages).

``/export/table.csv?<query>`` and ``/export/<page>.png|pdf?<query>&<display keys>``: the
browser's links carry the URL's query and fragment (see ``assets/dashboard.js``).
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from histoxai.dashboard.catalog import FIELDS, Catalog
from histoxai.dashboard.filters import page_of, rows_per_page, select
from histoxai.dashboard.overlays import Renderer, colour_table, legend_labels, rgba
from histoxai.dashboard.state import View

FIGURE_PAGES = ("single", "targets", "methods")


def table_csv(catalog: Catalog, view: View) -> str:
    """Every patch matching the view's filters, in its order: ids, place, split and fields."""
    table = catalog.tables.get(view.target)
    if table is None:
        return ""
    rows = select(catalog, view)
    grid = table.grid.iloc[rows].reset_index(drop=True)
    frame = pd.DataFrame(
        {
            "patch_id": table.patch_id[rows],
            "sample": grid["sample"].astype(str),
            "row": grid["row"],
            "col": grid["col"],
            "split": grid["split"].astype(str),
            "target": table.target,
            "source": table.source,
            **{f: table.values[f][rows] for f in FIELDS},
        }
    )
    return frame.to_csv(index=False)


def _cells(catalog: Catalog, view: View, page: str) -> tuple[list[str], list[list[tuple]]]:
    """(column titles, rows of cells) of the page: a cell is (pid, table key or None, variant, title)."""
    table = catalog.tables[view.target]
    rows = select(catalog, view)
    _, _, part = page_of(len(rows), view, rows_per_page(catalog, view, "/" + page))
    out = []
    for r in rows[part].tolist():
        pid = int(table.patch_id[r])
        v = {k: float(a[r]) for k, a in table.values.items()}
        title = f"#{pid} {table.sample_names[table.sample[r]]}\ny {v['y']:.3g} ŷ {v['y_hat']:.3g}\nΔ {v['delta']:+.3g}"
        if page == "single":
            out.append([(pid, view.target, view.variant, title)])
        elif page == "methods":
            out.append(
                [(pid, None, "", title)] + [(pid, view.target, m, "") for m in catalog.variants(view.target)]
            )
        else:
            keys = [k for k in catalog.tables if view.variant in catalog.variants(k)]
            out.append([(pid, None, "", title)] + [(pid, k, view.variant, "") for k in keys])
    if page == "methods":
        heads = ["patch", *catalog.variants(view.target)]
    elif page == "targets":
        heads = ["patch", *[k for k in catalog.tables if view.variant in catalog.variants(k)]]
    else:
        heads = []
    return heads, out


def _composite(
    renderer: Renderer, catalog: Catalog, view: View, pid: int, key: str | None, variant: str
) -> np.ndarray:
    image = renderer.patch(pid).astype(np.float32) / 255.0
    if key is None:
        return image
    t = catalog.tables[key]
    if int(t.positions([pid])[0]) < 0:
        return np.full_like(image, 0.95)
    unit = renderer.overlay_units(t.source, t.target, variant, [pid], view.norm, view.sign, view.clip)[0]
    ov = rgba(unit, colour_table(view.cmap), view.sign, view.follow)  # (h, w, 4) uint8
    a = ov[..., 3:4].astype(np.float32) / 255.0 * view.alpha
    return image * (1.0 - a) + ov[..., :3].astype(np.float32) / 255.0 * a


def grid_figure(catalog: Catalog, renderer: Renderer, view: View, page: str, fmt: str) -> bytes:
    """PNG or PDF of the page's tiles as the browser shows them, with titles and a colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap, Normalize

    heads, rows = _cells(catalog, view, page)
    if page == "single":
        flat = [c for row in rows for c in row]
        ncol = min(8, max(1, len(flat)))
        rows = [flat[i : i + ncol] for i in range(0, len(flat), ncol)] or [[]]
    ncol = max((len(r) for r in rows), default=1)
    fig, axes = plt.subplots(
        len(rows) + 1,
        ncol,
        figsize=(1.7 * ncol, 2.05 * len(rows) + 0.7),
        gridspec_kw={"height_ratios": [1] * len(rows) + [0.12]},
        squeeze=False,
    )
    for i, row in enumerate(rows):
        for j in range(ncol):
            ax = axes[i][j]
            ax.axis("off")
            if j >= len(row):
                continue
            pid, key, variant, title = row[j]
            ax.imshow(_composite(renderer, catalog, view, pid, key, variant), interpolation="nearest")
            label = title or (heads[j] if i == 0 and j < len(heads) else "")
            if i == 0 and heads and j < len(heads) and title:
                label = f"{heads[j]}\n{title}"
            ax.set_title(label, fontsize=6.5, loc="left")
    for ax in axes[-1]:
        ax.axis("off")
    table = catalog.tables[view.target]
    scale = renderer.scale(table.source, table.target, view.variant, None, view.norm, view.sign, view.clip)
    caption, ticks = legend_labels(view.sign, view.norm, view.clip, scale)
    bar = fig.add_axes([0.3, 0.02, 0.4, 0.018])
    lut = colour_table(view.cmap) / 255.0
    bar.imshow(np.arange(256)[None], aspect="auto", cmap=ListedColormap(lut), norm=Normalize(0, 255))
    bar.set_yticks([])
    bar.set_xticks([0, 127.5, 255], ticks, fontsize=6.5)
    bar.set_title(
        f"{table.target} · {catalog.variant_label(view.target, view.variant)} · {caption}", fontsize=7
    )
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=200 if fmt == "png" else None, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
