import pytest
import torch

from histoxai.xai_eval.resolution import infer_resolution, pool_to, res_name, smooth_random, upsample


def test_pool_to_keeps_full_resolution_and_matches_cam_upsampling():
    maps = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(pool_to(maps, (16, 16)), maps)
    pooled = pool_to(maps, (4, 4))
    assert pooled.shape == maps.shape
    assert infer_resolution(pooled, (16, 16)) == (4, 4)  # the oracle at 4x4 is a 4x4 map
    assert float(pooled.mean()) == pytest.approx(float(maps.mean()), abs=1e-3)


@pytest.mark.parametrize("res", [(2, 2), (4, 4), (8, 8), (32, 32)])
def test_native_resolution_is_recovered_from_upsampled_maps(res):
    g = torch.Generator().manual_seed(1)
    maps = upsample(torch.rand(3, *res, generator=g), (32, 32))
    assert infer_resolution(maps, (32, 32)) == res
    blocks = (
        torch.rand(3, *res, generator=g).repeat_interleave(32 // res[0], 1).repeat_interleave(32 // res[1], 2)
    )
    assert infer_resolution(blocks, (32, 32)) == res


def test_smooth_random_is_seeded_and_at_its_resolution():
    a = smooth_random((2, 16, 16), (4, 4), torch.Generator().manual_seed(3))
    b = smooth_random((2, 16, 16), (4, 4), torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (2, 16, 16)
    assert infer_resolution(a, (16, 16)) == (4, 4)
    assert res_name("oracle", (8, 8)) == "oracle@8x8"
