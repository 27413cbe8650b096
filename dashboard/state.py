"""The view state and its URL query string: every control of the sidebar is one query
key, so a view can be bookmarked, shared and reopened.

``?target=md&variant=gradcampp&sample=s1,s2&split=test&y=0.5,1.2&sort=absdelta&desc=1``

Parsing never fails: an unknown or malformed value falls back to its default, so a
hand-edited URL still opens a page.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode

from dashboard.catalog import Catalog

PAGES: dict[str, str] = {
    "/": "Main",
    "/single": "Single target",
    "/targets": "Multiple targets",
    "/methods": "Multiple methods",
}
CMAPS: tuple[str, ...] = (
    "viridis",
    "magma",
    "inferno",
    "plasma",
    "cividis",
    "turbo",
    "jet",
    "gray",
    "RdBu_r",
    "coolwarm",
)
DIVERGING: frozenset[str] = frozenset({"RdBu_r", "coolwarm"})
"""Colour maps showing signed saliency (−1..1); the others show |saliency| (0..1)."""
NORMS: dict[str, str] = {"image": "per image", "dataset": "per dataset (p99.5)", "none": "none (raw)"}
SORTS: dict[str, str] = {"id": "patch id", "y": "y", "absdelta": "|Δ|", "absrel": "|rΔ|"}
SPLIT_CHOICES: tuple[str, ...] = ("all", "train", "val", "test", "out")
TILE_SIZES: tuple[int, ...] = (96, 128, 160, 224)
PER_PAGE: tuple[int, ...] = (24, 48, 96)
RANGE_KEYS: dict[str, str] = {"y": "y", "delta": "d", "rel_delta": "rd"}
"""Field -> query key of its range filter."""

Range = tuple[float | None, float | None]


@dataclass(frozen=True)
class View:
    """Everything the user chose; ``None`` range ends are open."""

    target: str = ""
    variant: str = ""
    samples: tuple[str, ...] = ()
    split: str = "all"
    y: Range = (None, None)
    delta: Range = (None, None)
    rel_delta: Range = (None, None)
    sort: str = "id"
    desc: bool = False
    alpha: float = 0.5
    cmap: str = "viridis"
    norm: str = "image"
    tile: int = 128
    per: int = 48
    page: int = 1

    def filter_key(self) -> tuple:
        """The fields that decide which patches match and in which order."""
        return (
            self.target,
            self.samples,
            self.split,
            self.y,
            self.delta,
            self.rel_delta,
            self.sort,
            self.desc,
        )

    def range(self, name: str) -> Range:
        return getattr(self, name)

    def replace(self, **changes) -> View:
        return dataclasses.replace(self, **changes)


def per_page_choices(default_per: int) -> tuple[int, ...]:
    return tuple(sorted({*PER_PAGE, default_per}))


def parse_view(search: str | None, catalog: Catalog, default_per: int = 48) -> View:
    """The view a query string asks for, completed with defaults valid for ``catalog``."""
    q = {k: v[-1] for k, v in parse_qs((search or "").lstrip("?"), keep_blank_values=True).items()}
    targets = list(catalog.tables)
    target = q.get("target", "")
    if target not in catalog.tables:
        target = targets[0] if targets else ""
    variants = catalog.variants(target) if target else []
    variant = q.get("variant", "")
    if variant not in variants:
        variant = variants[0] if variants else ""
    samples = tuple(s for s in dict.fromkeys(q.get("sample", "").split(",")) if s in catalog.samples)
    view = View(
        target=target,
        variant=variant,
        samples=samples,
        split=_choice(q.get("split"), SPLIT_CHOICES, "all"),
        sort=_choice(q.get("sort"), tuple(SORTS), "id"),
        desc=q.get("desc") == "1",
        alpha=min(max(_number(q.get("alpha"), 0.5), 0.0), 1.0),
        cmap=_choice(q.get("cmap"), CMAPS, "viridis"),
        norm=_choice(q.get("norm"), tuple(NORMS), "image"),
        tile=int(_choice(_int(q.get("tile")), TILE_SIZES, 128)),
        per=int(_choice(_int(q.get("per")), per_page_choices(default_per), default_per)),
        page=max(1, _int(q.get("page")) or 1),
        **{name: _range(q.get(key)) for name, key in RANGE_KEYS.items()},
    )
    return view


def view_query(view: View, default_per: int = 48) -> str:
    """``?key=value&...`` for ``view``; target and variant always, the rest when not default."""
    base = View(per=default_per)
    q: dict[str, str] = {"target": view.target, "variant": view.variant}
    if view.samples:
        q["sample"] = ",".join(view.samples)
    for name in ("split", "sort", "cmap", "norm", "tile", "per", "page"):
        if getattr(view, name) != getattr(base, name):
            q[name] = str(getattr(view, name))
    if view.desc:
        q["desc"] = "1"
    if view.alpha != base.alpha:
        q["alpha"] = f"{view.alpha:g}"
    for name, key in RANGE_KEYS.items():
        lo, hi = view.range(name)
        if lo is not None or hi is not None:
            q[key] = f"{'' if lo is None else f'{lo:.6g}'},{'' if hi is None else f'{hi:.6g}'}"
    return "?" + urlencode(q, safe=",:")


def _choice(value, choices, default):
    return value if value in choices else default


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _number(text: str | None, default: float) -> float:
    try:
        x = float(text) if text is not None else default
    except ValueError:
        return default
    return x if math.isfinite(x) else default


def _range(text: str | None) -> Range:
    if not text or "," not in text:
        return (None, None)
    lo, hi = (_number(p, math.nan) if p else math.nan for p in text.split(",", 1))
    ends = (None if math.isnan(lo) else lo, None if math.isnan(hi) else hi)
    if ends[0] is not None and ends[1] is not None and ends[0] > ends[1]:
        return (ends[1], ends[0])
    return ends
