import numpy as np
import pytest
import torch

from histoxai.xai_eval.intervention import object_effects, object_scores
from histoxai.xai_eval.truth import load_truth


def remove_nuclei(store, pid, truth, row):
    """Re-render stand-in: each counted nucleus painted with the patch's stroma colour
    (the phantom's own ``ablate`` re-renders from the seed; this keeps the test on the
    store alone)."""
    image = store.images([pid])[0]
    stroma = np.median(image[store.masks([pid])[0] == 0], axis=0).astype(np.uint8)
    for k in np.unique(truth.instances[row])[1:]:
        mask = truth.instances[row] == k
        out = image.copy()
        out[mask] = stroma
        yield pid, "nucleus", int(k), out, mask


@pytest.mark.slow
def test_object_mass_of_the_truth_follows_the_true_effect_of_removing_each_nucleus(phantom_cc):
    store, model = phantom_cc["store"], phantom_cc["model"]
    ids = store.ids()[:12]
    truth = load_truth(store, ids, "cc")
    records = [r for i, pid in enumerate(ids) for r in remove_nuclei(store, int(pid), truth, i)]
    effects = object_effects(records, lambda x: model(x)[:, 0], "cpu")
    assert len(effects) == int(store.index["cc"].to_numpy()[ids].sum())
    x = torch.from_numpy(store.images(ids)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        s = dict(zip(map(int, ids), model(x)[:, 0].double().numpy()))
    assert (
        np.mean([s[p] - e for p, e in zip(effects["patch_id"], effects["s_without"])]) > 0
    )  # nuclei raise cc
    area = {int(p): (truth.instances[i] > 0).astype(float) for i, p in enumerate(ids)}
    scored = object_scores(effects, s, area)
    assert set(scored.columns) == {"patch_id", "object_rank_corr"} and len(scored)
    flipped = object_scores(effects, s, {p: -a for p, a in area.items()})
    np.testing.assert_allclose(flipped["object_rank_corr"], -scored["object_rank_corr"])
