"""Ground-truth outlines: classes offered, outline geometry, the image route."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from histoxai.config import DashboardConfig
from histoxai.dashboard.app import create_app
from histoxai.dashboard.masks import COLOURS, outline, outline_rgba, region
from histoxai.dashboard.state import parse_view, view_hash
from histoxai.data.store import MASK_CLASSES


def test_outline_is_the_boundary_of_a_region():
    m = np.zeros((6, 6), bool)
    m[1:5, 1:5] = True
    edge = outline(m)
    assert edge.sum() == 12 and not edge[2:4, 2:4].any() and edge[1, 1:5].all()


def test_the_store_offers_its_classes_and_the_url_keeps_the_choice(catalog):
    assert set(MASK_CLASSES) <= set(catalog.masks)
    view = parse_view("?target=md", catalog, hash="#mask=nuclei")
    assert view.mask == "nuclei" and "mask=nuclei" in view_hash(view)
    assert parse_view("", catalog, hash="#mask=../x").mask == ""


def test_outline_image_follows_the_mask(catalog, pipeline):
    patches = catalog.patches
    pid = int(np.argmax([(patches.masks([i])[0] == 1).sum() for i in range(len(patches))]))
    rgba = outline_rgba(patches, pid, "nuclei", patches.patch_size)
    drawn = rgba[..., 3] > 0
    assert drawn.any() and (drawn <= region(patches, pid, "nuclei")).all()
    assert tuple(rgba[drawn][0, :3]) == COLOURS["nuclei"]
    client = create_app(DashboardConfig(), pipeline["patches"], catalog=catalog).server.test_client()
    resp = client.get(f"/img/mask.png?ids={pid}&cls=nuclei")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(resp.data))), rgba)
    assert client.get(f"/img/mask.png?ids={pid}&cls=bone").status_code == 404
    assert client.get("/img/mask.png?ids=99999&cls=nuclei").status_code == 404


def test_counted_nuclei_are_nuclei_that_count(catalog):
    patches = catalog.patches
    if not getattr(patches, "has_instances", False):
        return  # a store without nucleus instances offers no "counted" outline
    assert "counted" in catalog.masks
    nuclei = patches.table("nuclei")
    for pid in range(4):
        counted, all_nuclei = region(patches, pid, "counted"), region(patches, pid, "nuclei")
        assert counted.any() == bool(nuclei[(nuclei.patch_id == pid) & nuclei.counted].shape[0])
        assert (counted & all_nuclei).sum() >= 0.9 * counted.sum()
