"""The URL query string round-trips the view and never breaks on bad input."""

from __future__ import annotations

from dashboard.state import View, parse_view, view_query


def test_query_round_trips_a_view(catalog):
    view = View(
        target="fa",
        variant="smoothgrad_s0.2",
        samples=("s2",),
        split="test",
        y=(0.2, None),
        delta=(-0.01, 0.02),
        sort="absdelta",
        desc=True,
        alpha=0.35,
        cmap="magma",
        norm="dataset",
        tile=160,
        per=24,
        page=3,
    )
    assert parse_view(view_query(view), catalog) == view


def test_defaults_are_left_out_of_the_query(catalog):
    view = parse_view("", catalog)
    assert view.target == "md" and view.variant == "gradcampp"
    assert view_query(view) == "?target=md&variant=gradcampp"


def test_bad_values_fall_back_to_defaults(catalog):
    view = parse_view(
        "?target=nope&variant=../../etc&sample=s1,zz&split=all2&y=a,b&alpha=9&cmap=evil&tile=7&per=-1&page=x",
        catalog,
    )
    assert (view.target, view.variant, view.samples, view.split) == ("md", "gradcampp", ("s1",), "all")
    assert view.y == (None, None) and view.alpha == 1.0 and view.cmap == "viridis"
    assert (view.tile, view.per, view.page) == (128, 48, 1)


def test_variant_must_belong_to_the_target(catalog):
    assert parse_view("?target=cc&variant=layercam", catalog).variant == "gradcampp"


def test_reversed_range_is_swapped_and_open_ends_kept(catalog):
    assert parse_view("?y=2,1", catalog).y == (1.0, 2.0)
    assert parse_view("?d=,0.5", catalog).delta == (None, 0.5)
