"""The batch runner writes complete, exact, resumable saliency stores."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from histoxai.config import VariantConfig
from histoxai.explain import methods, runner
from histoxai.explain.methods import resolve_variants
from histoxai.explain.runner import explain_patches
from histoxai.explain.store import META_COLUMNS, SaliencyStore, quantise

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
        maps = reopened.read(*pair)
        assert maps.shape == (n, 32, 32) and maps.dtype == np.float32 and np.isfinite(maps).all()
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
    assert reopened.manifest["passes_per_call"] == {"sg": 2}  # both noise copies fit the CPU budget


def test_maps_load_back_to_float16_precision_in_real_units(model32, patches, tmp_path, monkeypatch):
    computed = []
    original = runner.run_variant

    def spy(variant, *args, **kw):
        m = original(variant, *args, **kw)
        computed.append((variant["method"], m.detach().float().clone()))
        return m

    def tiny(model, images, target, score_fn, params, y=None):
        return (images[:, 0] - 0.5) * 1e-9  # raw float16 would flush these to zero

    monkeypatch.setattr(runner, "run_variant", spy)
    monkeypatch.setitem(methods.METHODS, "tiny", methods.Method(tiny, {}))
    variants = resolve_variants(["gradient", "tiny"])
    store = run(
        model32, patches, tmp_path / "sal", variants=variants, targets=["md"], batch_size=8, chunk_size=8
    )
    for name in "gradient", "tiny":
        want = torch.cat([m for k, m in computed if k == name]).numpy()
        got = store.read("md", name)
        assert got.dtype == np.float32 and got.shape == want.shape
        peak = np.abs(want).reshape(len(want), -1).max(axis=1)[:, None, None]
        assert np.abs(want).max() > 0
        # 11 significant bits for every value within 29 binades of its map's maximum
        assert np.all(np.abs(got - want) <= 2.0**-11 * np.abs(want) + peak * 2.0**-39)
    stats = store.manifest["timings"]["md__tiny"]
    assert stats["subnormal_fraction"] == 0 and stats["nonfinite_fraction"] == 0
    assert stats["abs_max"] == pytest.approx(float(np.abs(want).max()), rel=1e-6)


def test_numpy_and_device_quantisation_agree():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(5, 8, 8, generator=g) * torch.tensor([1e-8, 1e-3, 1.0, 3e4, 0.0]).view(5, 1, 1)
    maps[1, 0, 0] = float("inf")
    stored_t, scale_t, stats_t = runner.quantise(maps)
    stored_n, scale_n, stats_n = quantise(maps.numpy())
    np.testing.assert_array_equal(stored_t.numpy(), stored_n)
    np.testing.assert_array_equal(scale_t.numpy(), scale_n)
    np.testing.assert_array_equal(stats_t.numpy(), stats_n)
    assert stats_n[1] == 1 and scale_n[4] == 1  # one non-finite value; an all-zero map
    assert np.all(np.log2(scale_n) == np.round(np.log2(scale_n)))  # powers of two: exact


def test_a_failed_run_resumes_redoing_only_unfinished_chunks(model32, patches, tmp_path, monkeypatch):
    kw = {"batch_size": 2, "chunk_size": 4}  # 18 patches: 5 chunks of <= 2 batches
    full = run(model32, patches, tmp_path / "full", **kw)
    calls, die_at = [], [9 + 5]  # md__gradcam (9 batches), then the 5th batch of md__sg
    original = runner.run_variant

    def count(variant, *args, **k):
        calls.append(variant["method"])
        if len(calls) == die_at[0]:
            raise Killed
        return original(variant, *args, **k)

    monkeypatch.setattr(runner, "run_variant", count)
    with pytest.raises(Killed):
        run(model32, patches, tmp_path / "sal", **kw)
    assert not (tmp_path / "sal").exists()  # nothing swapped in before the run succeeds
    half = SaliencyStore(tmp_path / ".sal.new")
    assert half.manifest["complete"] == ["md__gradcam"]
    assert half.chunk_table("md", "sg")[:, 0].tolist() == [1, 1, 0, 0, 0]  # the 3rd chunk was in progress

    calls.clear()
    die_at[0] = -1
    resumed = run(model32, patches, tmp_path / "sal", **kw)
    assert calls.count("smoothgrad") == 5 + 9  # md__sg from its 3rd chunk on, then fa__sg
    assert calls.count("gradcam") == 9
    assert sorted(resumed.manifest["complete"]) == sorted(full.manifest["complete"])
    assert not (tmp_path / ".sal.new").exists()
    for pair in ("md", "gradcam"), ("md", "sg"), ("fa", "sg"):
        np.testing.assert_array_equal(np.asarray(resumed.maps(*pair)), np.asarray(full.maps(*pair)))
        np.testing.assert_array_equal(resumed.read(*pair), full.read(*pair))


def test_a_failed_run_with_other_methods_keeps_the_finished_maps(model32, patches, tmp_path, monkeypatch):
    first = run(model32, patches, tmp_path / "sal", targets=["md"])
    before = first.read("md", "sg")

    def broken(*args, **kw):
        raise ValueError("sigma must be >= 0")

    monkeypatch.setattr(runner, "run_variant", broken)
    with pytest.raises(ValueError, match="sigma"):
        run(model32, patches, tmp_path / "sal", targets=["md"], variants=resolve_variants(["gradient"]))
    kept = SaliencyStore(tmp_path / "sal")
    assert sorted(kept.manifest["complete"]) == ["md__gradcam", "md__sg"]
    np.testing.assert_array_equal(kept.read("md", "sg"), before)
    assert not list(tmp_path.glob(".sal.*.tmp"))  # (.sal.new stays: the next run resumes it)


def test_a_second_writer_is_refused_and_a_dead_writers_lock_is_not_in_the_way(model32, patches, tmp_path):
    from histoxai.io import OutputLockedError

    out = tmp_path / "sal"
    hold = f"import time; from histoxai.io import output_lock\nwith output_lock({str(out)!r}):\n    time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", hold])
    lock = tmp_path / ".sal.lock"
    try:
        for _ in range(600):  # until the holder has the lock
            if lock.is_file() and lock.read_text().strip() == str(holder.pid):
                break
            time.sleep(0.1)
        with pytest.raises(OutputLockedError, match=rf"{out} is being written.*pid {holder.pid}"):
            run(model32, patches, out, targets=["md"])
    finally:
        holder.kill()
        holder.wait()
    store = run(model32, patches, out, targets=["md"])  # the kernel dropped the dead holder's lock
    assert sorted(store.manifest["complete"]) == ["md__gradcam", "md__sg"]


def test_another_score_replaces_the_store(model32, patches, tmp_path):
    variants = resolve_variants(["gradient"])
    first = run(model32, patches, tmp_path / "sal", variants=variants, targets=["fa"])
    up = first.read("fa", "gradient")
    second = run(model32, patches, tmp_path / "sal", variants=variants, targets=["fa"], score="lower")
    assert second.manifest["score"] == "lower" and second.targets == ["fa"]
    np.testing.assert_array_equal(second.read("fa", "gradient"), -up)


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
    assert np.all(store.read("md", "constant") == 1.5)


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
