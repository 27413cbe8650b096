"""The URL (query: which patches; fragment: how they look) round-trips the view and never
breaks on bad input."""

from __future__ import annotations

from dashboard.state import View, display_query, parse_view, view_hash, view_query


def test_query_and_fragment_round_trip_a_view(catalog):
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
        sign="signed",
        clip=99.9,
        follow=False,
        tile=160,
        per=24,
        page=3,
        open="4|fa|layercam",
    )
    assert parse_view(view_query(view), catalog, hash=view_hash(view)) == view
    assert "cmap" not in view_query(view) and "split" not in view_hash(view)


def test_defaults_are_left_out_of_the_url(catalog):
    view = parse_view("", catalog)
    assert view.target == "md" and view.variant == "gradcampp"
    assert view_query(view) == "?target=md&variant=gradcampp" and view_hash(view) == ""
    assert display_query(view) == "cmap=viridis&norm=image&sign=abs&clip=99&fa=1"


def test_display_keys_in_the_query_still_work(catalog):
    assert parse_view("?cmap=magma&alpha=0.3", catalog).cmap == "magma"


def test_bad_values_fall_back_to_defaults(catalog):
    view = parse_view(
        "?target=nope&variant=../../etc&sample=s1,zz&split=out&y=a,b&per=-1&page=x",
        catalog,
        hash="#alpha=9&cmap=evil&tile=7&clip=42&sign=up&norm=none",
    )
    assert (view.target, view.variant, view.samples, view.split) == ("md", "gradcampp", ("s1",), "all")
    assert view.y == (None, None) and view.alpha == 1.0 and view.cmap == "viridis"
    assert (view.tile, view.per, view.page, view.clip, view.sign, view.norm) == (
        128,
        48,
        1,
        99.0,
        "abs",
        "image",
    )


def test_variant_must_belong_to_the_target(catalog):
    assert parse_view("?target=cc&variant=layercam", catalog).variant == "gradcampp"


def test_reversed_range_is_swapped_and_open_ends_kept(catalog):
    assert parse_view("?y=2,1", catalog).y == (1.0, 2.0)
    assert parse_view("?d=,0.5", catalog).delta == (None, 0.5)
