"""``params-thesis.yaml`` holds the thesis' final models exactly and runs end to end (shrunk).

``THESIS`` is transcribed from issue 12 (which quotes Lank 2024: Table 3.1, Table 3.3,
§2.2.2, §3.2.1, §3.2.6, Eq. 1.9, Figs 4.2-4.4), independently of the YAML file, so a
changed value in either fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from histoxai.cli import main
from histoxai.config import load_config, to_dict
from histoxai.explain.methods import resolve_variants
from tests.test_pipeline import DVC, clone, run  # noqa: F401 (clone: the fixture)

REPO = Path(__file__).resolve().parents[1]

THESIS: dict[str, object] = {
    # data, split (§2.2.2, §3.2.1, Table 4.1)
    "data.source": "micromen",
    "data.patch_size_px": 360,
    "data.split.scheme": "random",
    "data.split.fractions": (0.6, 0.2, 0.2),
    "data.split.in_samples": ("s3", "s4"),
    "data.micromen.erosion_vox": 5,
    # model (§3.2.3, Table 3.1, Table 3.3)
    "model.backbone": "tf_efficientnetv2_s",
    "model.pretrained": True,
    "model.dropout": 0.3,
    "model.head_activation": "linear",
    "model.targets": ("md", "faip"),
    # training (Table 3.3, §3.2.6)
    "train.batch_size": 16,
    "train.epochs": 100,
    "train.optimizer": "adamw",
    "train.weight_decay": 0.008,
    "train.schedule": "cosine",
    "train.warmup_epochs": 17,
    "train.decay_epochs": 60,
    "train.initial_lr": 1e-5,
    "train.warmup_target_lr": 5e-5,
    "train.augment.flips": False,
    "train.augment.rot90": False,
    "train.augment.small_rotation_deg": 0.0,
    "train.augment.stain_jitter": 0.0,
    # figures (Figs 4.2-4.4)
    "figures.n_patches": 12,
    "figures.alpha": 0.6,
    "figures.cmap": "viridis",
    "explain.split": "test",
}

# Explanation settings (issue 12 item 1: the thesis' tf-keras-vis settings).
THESIS_METHODS = {
    "gradcampp": ("gradcampp", {"layer": "last_conv"}),
    "layercam": ("layercam", {"layers": ["last_conv"], "gamma": 0.0}),
    "smoothgrad_s0.2": (
        "smoothgrad",
        {"sigma": 0.2, "n": 30, "abs": True, "reduce": "max", "sigma_relative": True},
    ),
    "smoothgrad_s0.3": (
        "smoothgrad",
        {"sigma": 0.3, "n": 30, "abs": True, "reduce": "max", "sigma_relative": True},
    ),
}


@pytest.fixture(scope="module")
def thesis():
    return load_config(REPO / "params-thesis.yaml")


def value(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.mark.parametrize("key", sorted(THESIS))
def test_each_thesis_value(thesis, key):
    assert value(thesis, key) == THESIS[key]


def test_training_has_two_phases(thesis):
    # issue 12 item 1: two-phase training (heads on the frozen backbone, then all layers);
    # the first phase's length and LR are not in issue 12's transcription, so only its presence.
    assert 0 < thesis.train.frozen_epochs < thesis.train.epochs


def test_each_thesis_explanation_setting(thesis):
    variants = resolve_variants(thesis.explain.methods)
    for name, (method, params) in THESIS_METHODS.items():
        assert variants[name]["method"] == method
        for k, v in params.items():
            assert variants[name]["params"][k] == v, f"{name}.{k}"


def test_every_value_carries_a_comment():
    # Each leaf line (key: value) of params-thesis.yaml names its source in a comment,
    # except the bare plumbing (paths, devices, names) listed here.
    plumbing = {"seed", "patches_dir", "models_dir", "reports_dir", "saliency_dir", "on_bad_sample",
                "registered_name", "channels_last", "compile", "device", "num_workers", "threads",
                "experiment", "study_name", "n_trials", "model_uri", "batch_size",
                "flips", "rot90", "small_rotation_deg", "stain_jitter"}  # fmt: skip
    missing = []
    for line in (REPO / "params-thesis.yaml").read_text().splitlines():
        text = line.split("#", 1)[0]
        if ":" not in text or text.strip().startswith("-") or text.rstrip().endswith(":"):
            continue
        key = text.split(":", 1)[0].strip()
        if "#" not in line and key not in plumbing:
            missing.append(key)
    assert not missing, f"params-thesis.yaml values without a source comment: {missing}"


def test_thesis_split_trains_on_s3_s4_and_holds_out_the_rest():
    from histoxai.config import SplitConfig
    from histoxai.data.splits import assign_splits

    index = pd.DataFrame({"sample": [f"s{k}" for k in range(1, 17) for _ in range(50)], "row": 0, "col": 0})
    index["row"] = index.groupby("sample").cumcount()
    cfg = load_config(REPO / "params-thesis.yaml").data.split
    ix = assign_splits(index, cfg, seed=0)
    inside = ix[ix["sample"].isin(["s3", "s4"])]["split_random"].value_counts(normalize=True)
    assert inside.to_dict() == pytest.approx({"train": 0.6, "val": 0.2, "test": 0.2})
    assert (ix[~ix["sample"].isin(["s3", "s4"])]["split_random"] == "out").all()
    assert ix[~ix["sample"].isin(["s3", "s4"])]["sample"].nunique() == 14
    with pytest.raises(ValueError, match="sample 's17' is not in the data"):
        assign_splits(index, SplitConfig(in_samples=("s17",)), seed=0)


# --------------------------------------------------------------------------- end to end, shrunk

SHRUNK = [
    "data.patch_size_px=32",
    "data.micromen.erosion_vox=0",
    "model.backbone=test_resnet",
    "model.pretrained=false",
    "model.hidden_width=16",
    "model.feature_width=8",
    "train.epochs=1",
    "train.frozen_epochs=1",
    "train.warmup_epochs=1",
    "train.decay_epochs=1",
    "train.num_workers=0",
    "train.precision=fp32",
    "train.device=cpu",
    "train.channels_last=false",
]
SHRUNK_EXPLAIN = [
    "explain.max_patches=4",
    "explain.device=cpu",
    "explain.precision=fp32",
    "figures.n_patches=3",
]


def shrunk_params(*extra: str) -> dict:
    """params-thesis.yaml with ``SHRUNK`` and ``extra`` applied, as a plain dict to write
    as a params file (for ``dvc repro``, which reads the file, not ``--set``)."""
    return to_dict(load_config(REPO / "params-thesis.yaml", [*SHRUNK, *extra]))


@pytest.fixture(scope="module")
def thesis_repo(tmp_path_factory):
    from tests.fixtures.micromen_fixture import build_micromen, load_summary, summary_or_skip

    root = tmp_path_factory.mktemp("thesis")
    build_micromen(
        root / "micromen",
        load_summary(summary_or_skip()),
        samples=((1, "v7.3", True), (3, "v5", False), (4, "v7.3", False)),
        block=16,
        size=(16, 12),
    )
    return root


@pytest.mark.slow
def test_thesis_config_runs_prepare_and_train_on_the_micromen_fixture(thesis_repo, monkeypatch):
    root = thesis_repo
    monkeypatch.chdir(root)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    params = str(REPO / "params-thesis.yaml")
    sets = [a for kv in [*SHRUNK, f"data.micromen.root={root / 'micromen'}"] for a in ("--set", kv)]
    assert main(["prepare", "--params", params, *sets]) == 0
    index = pd.read_parquet(root / "data" / "thesis" / "patches" / "index.parquet")
    assert index["faip"].notna().all()  # in-plane FA ingested from MR.FAIP
    by_sample = index.groupby("sample")["split_random"].agg(set)
    assert by_sample["s1"] == {"out"} and by_sample["s3"] == by_sample["s4"] == {"train", "val", "test"}

    assert main(["train", "--params", params, *sets]) == 0
    out = root / "models" / "thesis" / "thesis-mdfa"
    pred = pd.read_parquet(out / "predictions.parquet")
    assert {"y_md", "yhat_md", "y_faip", "yhat_faip"} <= set(pred.columns)
    assert set(pred.loc[pred["sample"] == "s1", "split"]) == {"out"}
    assert pred[["yhat_md", "yhat_faip"]].notna().all().all()
    info = json.loads((out / "run.json").read_text())
    assert info["targets"] == ["md", "faip"]

    from histoxai.models import load_checkpoint

    model = load_checkpoint(out / "model.pt")
    assert not any(isinstance(m, __import__("torch").nn.ReLU) for m in model.neck.modules())


# --------------------------------------------------------------------------- Table 3.2

# (kind, spec) per dimension, transcribed from issue 12 (Table 3.2, §3.2.3).
TABLE_3_2 = {
    "train.epochs": ("int", {"low": 50, "high": 100}),
    "train.warmup_epochs": ("int", {"low": 5, "high": 20}),
    "train.decay_epochs": ("int", {"low": 50, "high": 100}),
    "train.initial_lr": ("float", {"low": 1e-5, "high": 1e-4, "log": True}),
    "train.warmup_target_lr": ("categorical", {"choices": [5e-4, 1e-3, 3e-3]}),
}
SECTION_3_2_3 = {
    "tf_efficientnetv2_s",
    "convnext_tiny",
    "convnext_small",
    "mobilenetv1_100",
    "mobilenetv2_100",
    "mobilenetv3_large_100",
    "densenet121",  # KimiaNet: DenseNet-121 with a local weights file
}


def test_thesis_space_is_table_3_2():
    from histoxai.tuning.space import load_space

    space = load_space(REPO / "tuning" / "spaces" / "thesis.yaml")
    dims = {d.key: d for d in space.dimensions}
    for key, (kind, spec) in TABLE_3_2.items():
        assert dims[key].kind == kind, key
        for k, v in spec.items():
            assert dims[key].spec[k] == v, f"{key}.{k}"
    assert set(dims["model.backbone"].spec["choices"]) == SECTION_3_2_3
    assert 24 in dims["train.batch_size"].spec["choices"]
    assert {"train.augment.small_rotation_deg", "model.hidden_width"} <= set(dims)
    assert dims["model.pretrained_file"].when == {"model.backbone": ("densenet121",)}
    assert "kimianet" in dims["model.pretrained_file"].spec["choices"][0]
    assert space.fixed["model.head_activation"] == "linear"
    assert space.fixed["model.targets"] == ["md", "faip"]


@pytest.mark.slow
def test_thesis_config_explains_and_draws_figures_on_the_fixture(thesis_repo, monkeypatch):
    # Follows the prepare + train test (same module folder): the thesis' explanation
    # settings (last_conv, Eq. 1.9 LayerCAM, tf-keras-vis SmoothGrad) run, then the figures.
    root = thesis_repo
    if not (root / "models" / "thesis" / "thesis-mdfa" / "model.pt").is_file():
        pytest.skip("needs the prepare + train test of this module")
    monkeypatch.chdir(root)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = str(REPO / "params-thesis.yaml")
    sets = [
        a
        for kv in [*SHRUNK, *SHRUNK_EXPLAIN, f"data.micromen.root={root / 'micromen'}"]
        for a in ("--set", kv)
    ]
    assert main(["explain", "--params", params, *sets]) == 0
    assert main(["figures", "--params", params, *sets]) == 0
    out = root / "reports" / "thesis" / "figures" / "thesis-mdfa"
    assert {"grid_md.png", "grid_md.pdf", "grid_faip.png", "table_4_1.md", "table_4_1.csv"} <= {
        p.name for p in out.iterdir()
    }
    table = pd.read_csv(out / "table_4_1.csv", index_col=0)
    assert {"in/r2_md", "in/ev_md", "out/r2_faip", "out/ev_faip"} <= set(table.columns)
    assert table.loc["s1", "n_in"] == 0 and table.loc["s3", "n_out"] == 0


@pytest.mark.slow
def test_make_thesis_script_runs_shrunk_on_the_fixture(thesis_repo, tmp_path, monkeypatch):
    # scripts/thesis.sh (`make thesis`): prepare, baseline, both models, evaluate, explain,
    # figures; shrunk with THESIS_SET; outputs under the current folder.
    import os
    import subprocess

    from tests.fixtures.micromen_fixture import SUMMARY

    shrunk = [*SHRUNK, *SHRUNK_EXPLAIN]
    env = {
        **os.environ,
        "MICROMEN_ROOT": str(thesis_repo / "micromen"),
        "SUMMARY": str(SUMMARY.resolve()),
        "THESIS_SET": " ".join(shrunk),
        "PATH": f"{Path(os.sys.executable).parent}:{os.environ['PATH']}",
    }
    env.pop("MLFLOW_TRACKING_URI", None)  # fmt: skip
    done = subprocess.run([str(REPO / "scripts" / "thesis.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for path in ("reports/thesis/baseline/report.md", "reports/thesis/figures/thesis-mdfa/table_4_1.md",
                 "reports/thesis/figures/thesis-mdfa/grid_faip.pdf", "reports/thesis/figures/thesis-cc/grid_cc.png"):  # fmt: skip
        assert (tmp_path / path).is_file(), path
    table = pd.read_csv(tmp_path / "reports/thesis/figures/thesis-mdfa/table_4_1.csv", index_col=0)
    assert table.loc["s1", "brabec_cnn/r2_md"] == pytest.approx(0.419, abs=0.001)  # published CNN beside
    bad = subprocess.run([str(REPO / "scripts" / "thesis.sh")], cwd=tmp_path, capture_output=True, text=True,
                         env={**env, "MICROMEN_ROOT": str(tmp_path / "nowhere")})  # fmt: skip
    assert bad.returncode == 2 and "is not a folder" in bad.stderr


# --------------------------------------------------------------------------- dvc repro thesis/dvc.yaml

THESIS_OUTPUTS = [
    "reports/thesis/baseline/report.md",
    *[
        f"{folder}/thesis-{m}/{name}"
        for m, target in (("mdfa", "faip"), ("cc", "cc"))
        for folder, name in (
            ("models/thesis", "model.pt"),
            ("models/thesis", "predictions.parquet"),
            ("reports/thesis/evaluate", "report.md"),
            ("reports/thesis/evaluate", f"metrics/{target}.json"),
            ("data/thesis/saliency", "manifest.json"),
            ("reports/thesis/figures", "table_4_1.csv"),
            ("reports/thesis/figures", f"grid_{target}.png"),
        )
    ],
]


@pytest.mark.slow
def test_thesis_pipeline_reproduces_with_dvc_on_the_fixture(thesis_repo, clone):  # noqa: F811
    # thesis/dvc.yaml for real (`dvc repro thesis/dvc.yaml`) in a clone whose params-thesis.yaml
    # is shrunk and points at the MICROMEN-format fixture.
    import yaml

    from tests.fixtures.micromen_fixture import SUMMARY

    dest, env = clone
    params = shrunk_params(
        *SHRUNK_EXPLAIN,
        f"data.micromen.root={thesis_repo / 'micromen'}",
        f"figures.summary_mat={SUMMARY.resolve()}",
    )
    (dest / "params-thesis.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([DVC, "repro", "thesis/dvc.yaml"], dest, env)
    missing = [p for p in THESIS_OUTPUTS if not (dest / p).is_file()]
    assert not missing, missing
    for m, targets in (("mdfa", ["md", "faip"]), ("cc", ["cc"])):
        info = json.loads((dest / "models/thesis" / f"thesis-{m}" / "run.json").read_text())
        assert info["targets"] == targets, m
    lock = yaml.safe_load((dest / "thesis" / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"prepare", "baseline"} | {f"{s}@{m}" for s in ("train", "evaluate", "explain", "figures")
                                                   for m in ("mdfa", "cc")}  # fmt: skip
    assert all(set(stage["params"]) == {"params-thesis.yaml"} for stage in lock.values())
    assert "up to date" in run([DVC, "status", "thesis/dvc.yaml"], dest, env)
    table = pd.read_csv(dest / "reports/thesis/figures/thesis-mdfa/table_4_1.csv", index_col=0)
    assert table.loc["s1", "brabec_cnn/r2_md"] == pytest.approx(0.419, abs=0.001)  # published CNN beside


def _histoxai_commands(text: str) -> set[str]:
    return set(re.findall(r"^\s*(?:if .*then )?histoxai ([a-z-]+)", text, flags=re.M))


def test_make_thesis_and_the_thesis_pipeline_run_the_same_commands():
    # scripts/thesis.sh (no git or DVC needed) and thesis/dvc.yaml (tracked) are one study.
    import yaml

    stages = yaml.safe_load((REPO / "thesis" / "dvc.yaml").read_text())["stages"]
    dvc = {s.get("do", s)["cmd"].split()[1] for s in stages.values()}
    assert dvc == _histoxai_commands((REPO / "scripts" / "thesis.sh").read_text())
    for name, stage in stages.items():
        stage = stage.get("do", stage)
        assert "--params params-thesis.yaml" in stage["cmd"], name
        assert [list(p) for p in stage["params"]] == [["params-thesis.yaml"]], name
        assert stage["wdir"] == "..", name
