import numpy as np
import pytest
import torch

from histoxai.xai_eval.intervention import object_effects, object_scores


@pytest.fixture(scope="module")
def effects(phantom_cc):
    from histoxai.data import phantom_truth

    store, model = phantom_cc["store"], phantom_cc["model"]
    ids = store.ids()[:6]
    records = list(phantom_truth.ablate(store.root, ids, seed=0, max_objects=4))
    eff = object_effects(records, lambda x: model(x)[:, 0], "cpu")
    eff["true_dcc"] = [r.delta["cc"] for r in records]
    x = torch.from_numpy(store.images(ids)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        s = dict(zip(map(int, ids), model(x)[:, 0].double().numpy()))
    return eff, s, ids


@pytest.mark.slow
def test_removing_a_nucleus_in_distribution_lowers_the_predicted_count(effects):
    eff, s, _ = effects
    eff = eff.assign(delta=[s[p] - w for p, w in zip(eff["patch_id"], eff["s_without"])])
    counted = eff[(eff["kind"] == "nucleus") & (eff["true_dcc"] < 0)]  # removal lowers the true count
    assert len(counted) and counted["delta"].mean() > 0  # ... and the model's prediction


@pytest.mark.slow
def test_object_rank_correlation_flips_with_the_map_and_needs_three_objects(effects):
    eff, s, ids = effects
    masks = {int(p): np.zeros_like(eff["mask"].iloc[0], dtype=float) for p in ids}
    for p, m, k in zip(eff["patch_id"], eff["mask"], eff["kind"]):
        masks[int(p)] += m * (1.0 if k == "nucleus" else -0.5)  # a map that credits nuclei
    scored = object_scores(eff, s, masks)
    assert set(scored.columns) == {"patch_id", "object_rank_corr"} and len(scored)
    flipped = object_scores(eff, s, {p: -m for p, m in masks.items()})
    np.testing.assert_allclose(flipped["object_rank_corr"], -scored["object_rank_corr"])
    few = eff.groupby("patch_id").head(2)
    assert object_scores(few, s, masks).empty
