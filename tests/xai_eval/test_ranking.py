import numpy as np
import pandas as pd

from histoxai.xai_eval.ranking import RANKED_METRICS, beats, rank_methods


def table(**rows):
    return pd.DataFrame.from_dict(rows, orient="index")


RANDOM = {"auroc": 0.5, "deletion_auc": 0.1, "insertion_auc": 0.3}


def test_the_method_better_on_every_metric_comes_first():
    t = table(good={"auroc": 0.9, "deletion_auc": 0.5, "insertion_auc": 0.1},
              fair={"auroc": 0.7, "deletion_auc": 0.3, "insertion_auc": 0.2})  # fmt: skip
    order = rank_methods(t, RANDOM)
    assert [r["method"] for r in order] == ["good", "fair"]
    assert order[0]["score"] == 1.0 and order[0]["beats_random"] == 3


def test_not_beating_random_gets_a_rank_behind_every_method():
    t = table(a={"auroc": 0.45, "deletion_auc": 0.5, "insertion_auc": 0.1},
              b={"auroc": 0.6, "deletion_auc": 0.2, "insertion_auc": 0.2})  # fmt: skip
    a = next(r for r in rank_methods(t, RANDOM) if r["method"] == "a")
    assert a["ranks"]["auroc"] == 3.0  # n + 1, although its value ranks it below b anyway
    assert a["beats_random"] == 2


def test_a_method_failing_the_sanity_check_is_placed_last_whatever_its_score():
    t = table(best={"auroc": 0.9, "deletion_auc": 0.5, "insertion_auc": 0.1},
              ok={"auroc": 0.6, "deletion_auc": 0.2, "insertion_auc": 0.2})  # fmt: skip
    order = rank_methods(t, RANDOM, {"best": False, "ok": True})
    assert [r["method"] for r in order] == ["ok", "best"] and order[1]["passes_sanity"] is False


def test_only_ranked_metrics_with_values_are_used():
    t = table(a={"auroc": np.nan, "deletion_auc": 0.5, "sanity_rank_corr": 0.1})
    (row,) = rank_methods(t, RANDOM)
    assert set(row["ranks"]) == {"deletion_auc"} <= set(RANKED_METRICS)


def test_beats_handles_direction_and_missing_values():
    assert beats(0.6, 0.5, True) and not beats(0.4, 0.5, True) and beats(0.4, 0.5, False)
    assert not beats(np.nan, 0.5, True) and beats(0.1, np.nan, True)
