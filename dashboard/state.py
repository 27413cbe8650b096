"""The view state and its URL: the query string says *which* patches (target, variant,
filters, order, page; changing it asks the server for a new grid), the fragment says
*how they look* and which tile is open (opacity, colour map, normalisation, clipping,
sign, tile size, viewer; changing it never asks the server for a grid, the browser
rewrites image URLs and CSS). Both can be bookmarked and shared.

``/single?target=md&variant=gradcampp&split=test&y=0.5,1.2&sort=absdelta&desc=1#cmap=magma&open=12|md|gradcampp``

Parsing never fails: an unknown or malformed value falls back to its default, so a
hand-edited URL still opens a page. Display keys are also accepted in the query (old links).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode

from dashboard.catalog import Catalog

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
NORMS: dict[str, str] = {"image": "per image", "dataset": "per variant (all patches)"}
"""How a map is scaled for display: by a percentile of its own values or of the variant's."""
SIGNS: dict[str, str] = {
    "abs": "|saliency|",
    "pos": "positive only",
    "neg": "negative only",
    "signed": "signed (diverging)",
}
CLIPS: tuple[float, ...] = (90.0, 95.0, 99.0, 99.9, 100.0)
"""Percentile of the shown values mapped to the top colour (100: the maximum)."""
SORTS: dict[str, str] = {"id": "patch id", "y": "y", "absdelta": "|Δ|", "absrel": "|rΔ|"}
TILE_SIZES: tuple[int, ...] = (96, 128, 160, 224)
PER_PAGE: tuple[int, ...] = (24, 48, 96)
RANGE_KEYS: dict[str, str] = {"y": "y", "y_hat": "yh", "delta": "d", "rel_delta": "rd"}
"""Field -> query key of its range filter."""
DISPLAY_KEYS: tuple[str, ...] = ("alpha", "cmap", "norm", "sign", "clip", "fa", "tile", "open")
"""Keys of the URL fragment (display and viewer; the browser handles them alone)."""

Range = tuple[float | None, float | None]


@dataclass(frozen=True)
class View:
    """Everything the user chose; ``None`` range ends are open.

    ``follow``: overlay opacity follows |saliency| (unattributed tissue stays visible);
    ``alpha``: overall overlay opacity on top of that; ``open``: the tile in the viewer
    (``pid|target|variant``, empty: closed).
    """

    target: str = ""
    variant: str = ""
    samples: tuple[str, ...] = ()
    split: str = "all"
    y: Range = (None, None)
    y_hat: Range = (None, None)
    delta: Range = (None, None)
    rel_delta: Range = (None, None)
    sort: str = "id"
    desc: bool = False
    per: int = 48
    page: int = 1
    alpha: float = 0.8
    cmap: str = "viridis"
    norm: str = "image"
    sign: str = "abs"
    clip: float = 99.0
    follow: bool = True
    tile: int = 128
    open: str = ""

    def filter_key(self) -> tuple:
        """The fields that decide which patches match and in which order."""
        return (
            self.target,
            self.samples,
            self.split,
            self.y,
            self.y_hat,
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


def _pairs(text: str | None) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs((text or "").lstrip("?#"), keep_blank_values=True).items()}


def parse_view(search: str | None, catalog: Catalog, default_per: int = 48, hash: str | None = "") -> View:
    """The view a query string and fragment ask for, completed with defaults valid for ``catalog``."""
    q = {**_pairs(search), **_pairs(hash)}
    targets = list(catalog.tables)
    target = q.get("target", "")
    if target not in catalog.tables:
        target = targets[0] if targets else ""
    variants = catalog.variants(target) if target else []
    variant = q.get("variant", "")
    if variant not in variants:
        variant = variants[0] if variants else ""
    samples = tuple(s for s in dict.fromkeys(q.get("sample", "").split(",")) if s in catalog.samples)
    base = View()
    return View(
        target=target,
        variant=variant,
        samples=samples,
        split=_choice(q.get("split"), ("all", *catalog.splits), "all"),
        sort=_choice(q.get("sort"), tuple(SORTS), "id"),
        desc=q.get("desc") == "1",
        per=int(_choice(_int(q.get("per")), per_page_choices(default_per), default_per)),
        page=max(1, _int(q.get("page")) or 1),
        alpha=min(max(_number(q.get("alpha"), base.alpha), 0.0), 1.0),
        cmap=_choice(q.get("cmap"), CMAPS, base.cmap),
        norm=_choice(q.get("norm"), tuple(NORMS), base.norm),
        sign=_choice(q.get("sign"), tuple(SIGNS), base.sign),
        clip=float(_choice(_number(q.get("clip"), base.clip), CLIPS, base.clip)),
        follow=q.get("fa", "1") != "0",
        tile=int(_choice(_int(q.get("tile")), TILE_SIZES, base.tile)),
        open=q.get("open", "")[:200],
        **{name: _range(q.get(key)) for name, key in RANGE_KEYS.items()},
    )


def view_query(view: View, default_per: int = 48) -> str:
    """``?key=value&...`` (which patches) for ``view``; target and variant always, the rest when not default."""
    base = View(per=default_per)
    q: dict[str, str] = {"target": view.target, "variant": view.variant}
    if view.samples:
        q["sample"] = ",".join(view.samples)
    for name in ("split", "sort", "per", "page"):
        if getattr(view, name) != getattr(base, name):
            q[name] = str(getattr(view, name))
    if view.desc:
        q["desc"] = "1"
    for name, key in RANGE_KEYS.items():
        lo, hi = view.range(name)
        if lo is not None or hi is not None:
            q[key] = f"{'' if lo is None else f'{lo:.6g}'},{'' if hi is None else f'{hi:.6g}'}"
    return "?" + urlencode(q, safe=",:")


def view_hash(view: View) -> str:
    """``#key=value&...`` (how they look, which is open); empty when everything is default.

    The browser builds the same string in ``assets/dashboard.js`` (``viewHash``).
    """
    base = View()
    q: dict[str, str] = {}
    if view.alpha != base.alpha:
        q["alpha"] = f"{view.alpha:g}"
    for name in ("cmap", "norm", "sign"):
        if getattr(view, name) != getattr(base, name):
            q[name] = getattr(view, name)
    if view.clip != base.clip:
        q["clip"] = f"{view.clip:g}"
    if not view.follow:
        q["fa"] = "0"
    if view.tile != base.tile:
        q["tile"] = str(view.tile)
    if view.open:
        q["open"] = view.open
    return "#" + urlencode(q, safe=",:|") if q else ""


def display_query(view: View) -> str:
    """Query string of an overlay image: what changes its pixels (opacity is CSS).

    ``assets/dashboard.js`` (``displayQuery``) builds the same string.
    """
    return f"cmap={view.cmap}&norm={view.norm}&sign={view.sign}&clip={view.clip:g}&fa={int(view.follow)}"


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
