"""The console summary of a study."""

from __future__ import annotations

from histoxai.tuning.report import describe


def test_describe_names_counts_failures_the_best_trial_and_its_model():
    summary = {
        "study_name": "s1", "n_trials": 5, "complete": 3, "pruned": 1, "failed": 1, "requeued": 1,
        "failures": {4: "RuntimeError: boom"},
        "best": {"number": 2, "value": 0.81234, "params": {"train.lr": 0.001},
                 "model_uri": "models:/histoxai-mdfa/7"},
    }  # fmt: skip
    assert describe(summary).splitlines() == [
        "study s1: 5 trials (3 complete, 1 pruned, 1 failed, 1 re-queued after a worker died)",
        "  trial 4 failed: RuntimeError: boom",
        "best trial 2: validation R2 0.8123",
        "  train.lr = 0.001",
        "  registered as models:/histoxai-mdfa/7 (alias champion)",
    ]
    assert describe({**summary, "failures": {}, "best": None}).count("\n") == 0  # no trial finished
