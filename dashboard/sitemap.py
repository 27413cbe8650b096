"""The one table of the dashboard's pages: path, name in the header, nav link id, what it
shows (Main page links) and the function building its grid (None: the Main page)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dashboard.linked import linked_page
from dashboard.pages import methods_page, single_page, targets_page


@dataclass(frozen=True)
class Page:
    path: str
    name: str
    nav_id: str
    description: str
    build: Callable | None = None


PAGES: dict[str, Page] = {
    p.path: p
    for p in (
        Page("/", "Main", "nav-main", "what is loaded, the models' R², the explanation ranking"),
        Page(
            "/single",
            "Single target",
            "nav-single",
            "a grid of patches for one target and one method variant",
            single_page,
        ),
        Page(
            "/targets",
            "Multiple targets",
            "nav-targets",
            "the same patches, one column per target, same method",
            targets_page,
        ),
        Page(
            "/methods",
            "Multiple methods",
            "nav-methods",
            "the same patches, one column per method variant, same target",
            methods_page,
        ),
        Page(
            "/linked",
            "Linked views",
            "nav-linked",
            "y against ŷ and Δ against y whose brush filters the grid; voxel maps per sample",
            linked_page,
        ),
    )
}
