"""The batch runner writes complete, exact, resumable saliency stores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from histoxai.config import VariantConfig
from histoxai.explain import methods, runner
from histoxai.explain.methods import resolve_variants
from histoxai.explain.runner import explain_patches
from histoxai.explain.store import META_COLUMNS, SaliencyStore

from .conftest import tiny_regressor

VARIANTS = resolve_variants(["gradcam", VariantConfig("sg", "smoothgrad", {"n": 2, "sigma": 0.2})])


@pytest.fixture(scope="module")
def model32() -> torch.nn.Module:
    return tiny_regressor(("md", "fa"))


def run(model, patches, out, **kw):
    kw.setdefault("batch_size", 4)
    return explain_patches(
        model, patches, patches.ids(), out, kw.pop("variants", VARIANTS), device="cpu", progress=False, **kw
    )


class Killed(Exception):
    pass


def test_store_holds_every_pair_with_meta(model32, patches, tmp_path):
    store = run(
        model32, patches, tmp_path / "sal", manifest={"model_uri": "models:/m/3", "model_version": "3"}
    )
    reopened = SaliencyStore(tmp_path / "sal")
    n = len(patches)
    assert sorted(reopened.manifest["complete"]) == ["fa__gradcam", "fa__sg", "md__gradcam", "md__sg"]
    assert reopened.manifest["model_version"] == "3"
    assert reopened.variants == VARIANTS
    for pair in ("md", "gradcam"), ("fa", "sg"):
        maps = reopened.maps(*pair)
        assert maps.shape == (n, 32, 32) and maps.dtype == np.float16
    meta = store.meta
    assert list(meta.columns) == list(META_COLUMNS) and len(meta) == 2 * n
    md = meta[meta["target"] == "md"].set_index("patch_id")
    index = patches.index.set_index("patch_id")
    np.testing.assert_allclose(md["y"], index["md"])
    assert (md["split"] == index["split_random"]).all()
    with torch.no_grad():
        y_hat = model32(torch.from_numpy(patches.images(patches.ids())).permute(0, 3, 1, 2).float() / 255)[
            :, 0
        ]
    np.testing.assert_allclose(md["y_hat"], y_hat.numpy(), rtol=1e-5)
    np.testing.assert_allclose(md["delta"], md["y_hat"] - md["y"])
    np.testing.assert_allclose(md["rel_delta"], (md["y_hat"] / md["y"] - 1) * 100)
    assert {"seconds", "maps_per_s"} <= set(reopened.manifest["timings"]["md__sg"])


def test_maps_load_back_exactly(model32, patches, tmp_path, monkeypatch):
    written = {}
    original = SaliencyStore.write_maps

    def spy(self, target, variant, maps, info=None):
        written[(target, variant)] = maps.copy()
        original(self, target, variant, maps, info)

    monkeypatch.setattr(SaliencyStore, "write_maps", spy)
    store = run(model32, patches, tmp_path / "sal")
    assert len(written) == 4
    for (target, variant), maps in written.items():
        assert maps.dtype == np.float16
        np.testing.assert_array_equal(np.asarray(store.maps(target, variant)), maps)
    assert np.abs(written["md", "sg"].astype(np.float32)).max() > 0


@pytest.mark.slow
def test_a_killed_run_resumes_without_redoing_complete_pairs(model32, patches, tmp_path, monkeypatch):
    full = run(model32, patches, tmp_path / "full")
    calls = []
    original_write, original_run = SaliencyStore.write_maps, runner.run_variant

    def count(variant, *args, **kw):
        calls.append(variant["method"])
        return original_run(variant, *args, **kw)

    def write_then_die(self, target, variant, maps, info=None):
        original_write(self, target, variant, maps, info)
        raise Killed

    monkeypatch.setattr(runner, "run_variant", count)
    monkeypatch.setattr(SaliencyStore, "write_maps", write_then_die)
    with pytest.raises(Killed):
        run(model32, patches, tmp_path / "sal")
    half = SaliencyStore(tmp_path / "sal")
    assert half.manifest["complete"] == ["md__gradcam"]
    assert [p.name for p in (tmp_path / "sal" / "maps").iterdir()] == ["md__gradcam.npy"]  # no partial files

    monkeypatch.setattr(SaliencyStore, "write_maps", original_write)
    calls.clear()
    resumed = run(model32, patches, tmp_path / "sal")
    n_batches = -(-len(patches) // 4)
    assert calls.count("gradcam") == n_batches  # fa only: md's maps were kept
    assert calls.count("smoothgrad") == 2 * n_batches
    assert sorted(resumed.manifest["complete"]) == sorted(full.manifest["complete"])
    for pair in ("md", "gradcam"), ("md", "sg"), ("fa", "sg"):
        np.testing.assert_array_equal(np.asarray(resumed.maps(*pair)), np.asarray(full.maps(*pair)))


def test_another_score_replaces_the_store(model32, patches, tmp_path):
    variants = resolve_variants(["gradient"])
    first = run(model32, patches, tmp_path / "sal", variants=variants, targets=["fa"])
    up = np.asarray(first.maps("fa", "gradient"), dtype=np.float32)
    second = run(model32, patches, tmp_path / "sal", variants=variants, targets=["fa"], score="lower")
    assert second.manifest["score"] == "lower" and second.targets == ["fa"]
    np.testing.assert_array_equal(np.asarray(second.maps("fa", "gradient"), dtype=np.float32), -up)


def test_bad_requests_name_what_was_expected(model32, patches, tmp_path):
    with pytest.raises(ValueError, match=r"explain.targets \['cc'\].*\['md', 'fa'\]"):
        run(model32, patches, tmp_path / "sal", targets=["cc"])
    with pytest.raises(ValueError, match="explain.score='up'"):
        run(model32, patches, tmp_path / "sal", score="up")


def test_registry_entries_run_through_the_runner(model32, patches, tmp_path, monkeypatch):
    # Adding a method is one registry entry: the runner needs nothing else.
    def centre(model, images, target, score_fn, params, y=None):
        return torch.full(images.shape[:1] + images.shape[2:], float(params["value"]))

    monkeypatch.setitem(methods.METHODS, "constant", methods.Method(centre, {"value": 1.5}))
    store = run(model32, patches, tmp_path / "sal", variants=resolve_variants(["constant"]), targets=["md"])
    assert np.all(np.asarray(store.maps("md", "constant")) == 1.5)


def test_read_gives_float32_rows_and_native_resolutions_are_recorded(model32, patches, tmp_path):
    variants = resolve_variants(["gradcam", "layercam", "gradient", "occlusion"])
    store = run(model32, patches, tmp_path / "sal", variants=variants, targets=["md"])
    every = store.read("md", "gradient")
    assert every.dtype == np.float32 and every.shape == (len(patches), 32, 32)
    np.testing.assert_array_equal(store.read("md", "gradient", [2, 0]), every[[2, 0]])
    # resnet10t on 32 px: the last stage is 1 x 1, the fused layercam's finest layer 4 x 4
    assert store.native_resolution("gradcam") == (1, 1)
    assert store.native_resolution("layercam") == (4, 4)
    assert store.native_resolution("gradient") == (32, 32)
    assert store.native_resolution("occlusion") == (7, 7)  # (32 - 8) // 4 + 1 windows
    with pytest.raises(KeyError, match="no variant 'sg'"):
        store.native_resolution("sg")
