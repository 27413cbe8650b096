from dataclasses import replace

import pytest
import timm
import torch

from histoxai.config import ConfigError, ModelConfig, load_config
from histoxai.errors import InputError
from histoxai.explain.cams import layer_cams
from histoxai.explain.scores import higher
from histoxai.models import (
    PretrainedWeightsError,
    Regressor,
    build_regressor,
    load_checkpoint,
    save_checkpoint,
)

TINY = ModelConfig(backbone="test_resnet", targets=("md", "fa", "cc"), hidden_width=16, feature_width=8)


@pytest.fixture
def model() -> Regressor:
    torch.manual_seed(0)
    return build_regressor(TINY, [1.0, 0.3, 12.0], [0.4, 0.1, 5.0]).eval()


def test_forward_returns_real_units_per_target(model):
    x = torch.rand(4, 3, 32, 32)
    y = model(x)
    assert y.shape == (4, 3) and model.targets == ("md", "fa", "cc")
    assert torch.allclose(
        y, model.standardized(x) * torch.tensor([0.4, 0.1, 5.0]) + torch.tensor([1.0, 0.3, 12.0])
    )
    assert torch.allclose(model.standardize(y), model.standardized(x), atol=1e-5)
    assert model.backbone(x).shape == (4, model.neck[1].in_features)  # pooled timm features feed the neck
    assert set(model.heads) == {"md", "fa", "cc"}


@pytest.mark.parametrize("backbone", ["test_efficientnet", "mobilenetv3_small_050", "test_vit"])
def test_any_timm_backbone_fits(backbone):
    model = build_regressor(
        ModelConfig(backbone=backbone, hidden_width=8, feature_width=4), [0, 0], [1, 1]
    ).eval()
    size = model.backbone.pretrained_cfg.get("input_size", (3, 32, 32))[-1] if "vit" in backbone else 32
    assert model(torch.rand(2, 3, size, size)).shape == (2, 2)


def test_checkpoint_round_trip_is_exact(model, tmp_path):
    path = save_checkpoint(tmp_path / "m" / "model.pt", model, TINY, {"run_id": "abc"})
    loaded = load_checkpoint(path)
    x = torch.rand(3, 3, 32, 32)
    # weights round-trip bit for bit; outputs of two module instances may differ in the last
    # bits (kernel choice per instance/allocation), so they are compared with a tolerance
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-6)
    assert loaded.targets == model.targets and loaded.checkpoint_extra == {"run_id": "abc"}
    assert not loaded.training


def test_stain_normaliser_travels_with_the_checkpoint(tmp_path):
    ref = {"he_ref": [[0.56, 0.22], [0.72, 0.80], [0.41, 0.56]], "max_c_ref": [1.9, 1.0]}
    model = build_regressor(TINY, [0, 0, 0], [1, 1, 1], stain_reference=ref).eval()
    loaded = load_checkpoint(save_checkpoint(tmp_path / "model.pt", model, TINY))
    assert torch.allclose(loaded.stain.he_ref, torch.tensor(ref["he_ref"]))
    x = torch.rand(2, 3, 32, 32) * 0.6
    torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-6)


def test_bad_checkpoint_and_backbone_names_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a histoxai checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="'resnet_nope' is not a timm model"):
        build_regressor(ModelConfig(backbone="resnet_nope"), [0, 0], [1, 1])


def test_missing_pretrained_weights_say_how_to_provide_them(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    with pytest.raises(PretrainedWeightsError) as err:
        build_regressor(ModelConfig(backbone="resnet10t", pretrained=True), [0, 0], [1, 1])
    text = str(err.value)
    assert "resnet10t" in text and "model.pretrained_file" in text and "never downloads" in text
    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        build_regressor(
            ModelConfig(backbone="resnet10t", pretrained=True, pretrained_file=str(tmp_path / "nope.pth")),
            [0],
            [1],
        )


def test_pretrained_file_weights_are_loaded(tmp_path):
    source = timm.create_model("test_resnet", pretrained=False)  # with its classifier, like a hub file
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    cfg = ModelConfig(backbone="test_resnet", pretrained=True, pretrained_file=str(tmp_path / "weights.pth"))
    model = build_regressor(cfg, [0, 0], [1, 1])
    for name, value in model.backbone.state_dict().items():
        assert torch.equal(value, source.state_dict()[name])


@pytest.mark.parametrize("output_stride", [0, 8])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_weights_file_that_does_not_load_names_the_file(tmp_path, suffix, output_stride):
    """A damaged or foreign weights file is an InputError naming the file and the model,
    never reported as an output_stride problem."""
    bad = tmp_path / f"weights{suffix}"
    bad.write_text("not a state dict")
    cfg = ModelConfig(
        backbone="test_resnet", pretrained=True, pretrained_file=str(bad), output_stride=output_stride
    )
    with pytest.raises(InputError, match="do not load into timm model 'test_resnet'") as err:
        build_regressor(cfg, [0, 0], [1, 1])
    assert str(bad) in str(err.value) and "output_stride" not in str(err.value)
    foreign = tmp_path / "foreign.pth"
    torch.save(timm.create_model("test_efficientnet", pretrained=False).state_dict(), foreign)
    with pytest.raises(InputError, match="foreign.pth"):
        build_regressor(replace(cfg, pretrained_file=str(foreign)), [0, 0], [1, 1])


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.targets=[md, xx]", "unknown target 'xx'"),
        ("model.targets=[md, md]", "appears twice"),
        ("model.loss_weights={cc: 2}", "model.loss_weights.cc: 'cc' is not trained"),
        ("model.loss_weights={md: 0}", "expected a value > 0"),
        ("model.pretrained_file=w.pth", "model.pretrained is false"),
    ],
)
def test_bad_model_configs_are_rejected(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_input_scale_and_output_stride_refine_the_last_stage(tmp_path):
    """issue 10: CAMs at the last stage are 4x4 at 128 px by default; resizing the patch 2x
    and dilating the last stages (timm output_stride 8) makes them 32x32."""
    x = torch.rand(2, 3, 128, 128)
    shapes = {}
    for scale, stride in [(1.0, 0), (1.0, 8), (2.0, 8)]:
        cfg = ModelConfig(
            targets=("cc",), hidden_width=8, feature_width=4, input_scale=scale, output_stride=stride
        )
        model = build_regressor(cfg, [10.0], [3.0]).eval()
        shapes[scale, stride] = tuple(layer_cams(model, x, 0, higher, [-1], "hirescam")[0].shape)
        loaded = load_checkpoint(save_checkpoint(tmp_path / f"{scale}-{stride}.pt", model, cfg))
        assert loaded.input_scale == scale
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-5)
    assert shapes == {(1.0, 0): (2, 4, 4), (1.0, 8): (2, 16, 16), (2.0, 8): (2, 32, 32)}


def test_an_output_stride_the_model_lacks_is_a_clear_error():
    with pytest.raises(InputError, match=r"model.output_stride=8: timm model 'test_vit' does not take it"):
        build_regressor(ModelConfig(backbone="test_vit", output_stride=8), [0, 0], [1, 1])
    with pytest.raises(ConfigError, match=r"model.output_stride=4: expected one of \[0, 8, 16, 32\]"):
        load_config(None, ["model.output_stride=4"])
