from pathlib import Path
from types import SimpleNamespace

import pytest

from histoxai.evaluation.model_dir import card_ceilings
from histoxai.evaluation.report import evaluate
from tests.evaluation.helpers import predictions_from_store


def _store(card):
    return SimpleNamespace(card=card, root=Path("data/patches"))


def test_card_ceilings_reads_label_noise_oracle_and_within_sample_oracle_skipping_nulls():
    card = {
        "ceilings": {"md": 0.96, "fa": 0.9, "cc": 1.0},
        "oracle_ceilings": {"md": 0.93, "fa": None, "cc": 0.97},
        "oracle_within_sample": {"md": None, "fa": None, "cc": None},
    }
    assert card_ceilings(_store(card)) == {
        "ceiling": {"md": 0.96, "fa": 0.9, "cc": 1.0},
        "oracle": {"md": 0.93, "cc": 0.97},
    }
    with pytest.raises(ValueError, match=r"card.json: 'oracle_ceilings' must map targets to numbers"):
        card_ceilings(_store({"oracle_ceilings": {"md": "high"}}))


def test_ceilings_become_metrics_named_by_what_they_compare_with(phantom_store):
    pred = predictions_from_store(phantom_store, noise=0.3)
    ceilings = {"ceiling": {"md": 0.96}, "oracle": {"md": 0.93}, "oracle r2within": {"md": 0.8}}
    ev = evaluate(pred, ["md"], ceilings=ceilings)
    assert ev.metrics["ceiling/r2_md"] == 0.96 and ev.metrics["oracle/r2_md"] == 0.93
    assert ev.metrics["oracle/r2within_md"] == 0.8
    assert ev.headline["md"]["oracle"] == 0.93  # the headline's ceiling
