"""EmbeddingModel: local pretrained weights (the offline path), head width, frozen BatchNorm."""

import pytest
import timm
import torch
from safetensors.torch import save_file

from pmlbal.models import EmbeddingModel


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(0)
    return timm.create_model("resnet10t", pretrained=False)  # with its 1000-class classifier, as published


@pytest.mark.parametrize("form", ["pth", "safetensors", "wrapped", "ddp"])
def test_local_weights_load_into_the_backbone(source, form, tmp_path):
    state = source.state_dict()
    path = tmp_path / f"w.{'safetensors' if form == 'safetensors' else 'pth'}"
    if form == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif form == "wrapped":
        torch.save({"state_dict": state, "epoch": 3}, path)
    elif form == "ddp":
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    else:
        torch.save(state, path)
    model = EmbeddingModel("resnet10t", 16, pretrained=str(path))
    got = model.backbone.state_dict()
    for k, v in got.items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)
    assert "fc.weight" not in got  # the classifier is dropped, not an error
    fresh = EmbeddingModel("resnet10t", 16)
    assert not torch.equal(fresh.backbone.conv1[0].weight, model.backbone.conv1[0].weight)


def test_bad_weight_files_are_named(source, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found: .*missing.pth"):
        EmbeddingModel("resnet10t", 16, pretrained=str(tmp_path / "missing.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_text("not weights")
    with pytest.raises(ValueError, match="cannot read pretrained weights .*junk.pth"):
        EmbeddingModel("resnet10t", 16, pretrained=str(junk))
    other = tmp_path / "other.pth"
    torch.save({"encoder.layer.0.weight": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="holds no weights for backbone 'resnet10t'"):
        EmbeddingModel("resnet10t", 16, pretrained=str(other))
    not_tensors = tmp_path / "cfg.pth"
    torch.save({"lr": 0.1}, not_tensors)
    with pytest.raises(ValueError, match="not a state dict of tensors"):
        EmbeddingModel("resnet10t", 16, pretrained=str(not_tensors))


def test_unknown_backbone_and_bad_dim():
    with pytest.raises(ValueError, match="unknown timm backbone 'resnet7'"):
        EmbeddingModel("resnet7", 16)
    with pytest.raises(ValueError, match="embedding_dim"):
        EmbeddingModel("resnet10t", 0)


def test_head_width_follows_pre_logits_and_frozen_bn_stays_frozen():
    m = EmbeddingModel("mobilenetv3_small_050", 24, freeze_bn=True)  # pre-logits MLP wider than num_features
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 24)
    m.train()
    bns = [x for x in m.backbone.modules() if isinstance(x, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and all(not b.training and not any(p.requires_grad for p in b.parameters()) for b in bns)
    before = bns[0].running_mean.clone()
    m(torch.randn(4, 3, 32, 32) * 5 + 3)
    torch.testing.assert_close(bns[0].running_mean, before)


def test_tagged_weights_load_from_a_local_file_with_their_own_mean_and_std(tmp_path):
    tagged = "resnet18d.ra4_e3600_r224_in1k"  # its pretrained_cfg normalises with 0.5, the untagged one with ImageNet's
    torch.manual_seed(1)
    state = timm.create_model(tagged, pretrained=False).state_dict()
    path = tmp_path / "w.pth"
    torch.save(state, path)
    model = EmbeddingModel(tagged, 16, pretrained=str(path))
    assert model.mean == model.std == (0.5, 0.5, 0.5)
    assert EmbeddingModel("resnet18d", 16).mean == (0.485, 0.456, 0.406)
    for k, v in model.backbone.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown pretrained tag 'nope' .*tv_in1k"):
        EmbeddingModel("resnet50.nope", 16)


@pytest.mark.parametrize("pooling", ["avg", "max", "avg+max"])
def test_pooling_of_the_last_feature_map(pooling):
    model = EmbeddingModel("resnet10t", 8, pooling=pooling).eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        fmap = model.backbone.forward_features(x)
        avg = torch.nn.functional.adaptive_avg_pool2d(fmap, 1).flatten(1)
        mx = torch.nn.functional.adaptive_max_pool2d(fmap, 1).flatten(1)
        expected = {"avg": avg, "max": mx, "avg+max": avg + mx}[pooling]
        torch.testing.assert_close(model.features(x), expected)
        torch.testing.assert_close(model(x), model.head(expected))
    with pytest.raises(ValueError, match="pooling must be one of"):
        EmbeddingModel("resnet10t", 8, pooling="gem")


def test_kaiming_head_init_is_proxy_anchors():
    torch.manual_seed(0)
    head = EmbeddingModel("resnet10t", 2048, head_init="kaiming").head
    assert torch.all(head.bias == 0)
    # kaiming_normal_(fan_out): std = sqrt(2 / out_features)
    assert head.weight.std().item() == pytest.approx((2 / 2048) ** 0.5, rel=0.05)


def test_frozen_bn_keeps_its_statistics_and_affine_through_a_training_step():
    from pmlbal.loop import train_step

    m = EmbeddingModel("resnet10t", 8, freeze_bn=True)
    bns = [x for x in m.backbone.modules() if isinstance(x, torch.nn.modules.batchnorm._BatchNorm)]
    before = [{k: v.clone() for k, v in b.state_dict().items()} for b in bns]
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=0.1)
    conv_before = m.backbone.conv1[0].weight.clone()
    m.train()
    train_step(m, lambda z, y: (z ** 2).mean(), opt, torch.randn(4, 3, 32, 32) * 3 + 1, torch.zeros(4), amp=False)
    assert bns and all(not b.training for b in bns)
    assert all(torch.equal(v, b.state_dict()[k]) for b, state in zip(bns, before) for k, v in state.items())
    assert {"running_mean", "weight", "num_batches_tracked"} <= set(before[0])
    assert not torch.equal(conv_before, m.backbone.conv1[0].weight)  # the rest trained


def test_a_saved_model_reloads_with_its_pooling(tmp_path):
    from pmlbal.checkpoints import load_checkpoint, save_checkpoint
    from pmlbal.config import TrainConfig

    cfg = TrainConfig(backbone="resnet10t", embedding_dim=8, pooling="avg+max", results_dir=str(tmp_path))
    model = EmbeddingModel("resnet10t", 8, pooling="avg+max").eval()
    back, back_cfg = load_checkpoint(save_checkpoint(model, cfg, "r1"), device="cpu")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(back.eval()(x), model(x))
    assert back_cfg.pooling == "avg+max"


def test_offline_timm_weights_stop_with_one_line_naming_the_ways_out(monkeypatch):
    from pmlbal import models

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(models, "_weights_cached", lambda cfg: False)
    with pytest.raises(OSError, match=r"not in the local cache.*--pretrained PATH.*--pretrained none") as err:
        models.EmbeddingModel("resnet10t", 8, pretrained="timm")
    assert "\n" not in str(err.value)
    # Unreachable without the variable too: the probe's answer decides, within its timeout.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=0: False)
    with pytest.raises(OSError, match="cannot be reached"):
        models.check_weights_available("resnet50.tv_in1k")


def test_cached_timm_weights_are_not_probed(monkeypatch):
    from pmlbal import models

    monkeypatch.setattr(models, "_weights_cached", lambda cfg: True)
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=0: pytest.fail("probed the network"))
    models.check_weights_available("resnet10t")


def test_stats_frozen_bn_keeps_its_statistics_while_its_affine_parameters_train():
    # PML's trainer with freeze_trunk_batchnorm (MLRC): BN layers in eval mode, weight and bias trained.
    from pmlbal.loop import train_step

    m = EmbeddingModel("resnet10t", 8, freeze_bn="stats")
    bns = [x for x in m.backbone.modules() if isinstance(x, torch.nn.modules.batchnorm._BatchNorm)]
    stats = [(b.running_mean.clone(), b.running_var.clone(), b.num_batches_tracked.clone()) for b in bns]
    weights = [b.weight.detach().clone() for b in bns]
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    m.train()
    train_step(m, lambda z, y: (z ** 2).mean(), opt, torch.randn(4, 3, 32, 32) * 3 + 1, torch.zeros(4), amp=False)
    assert bns and all(not b.training for b in bns) and all(b.weight.requires_grad for b in bns)
    assert all(torch.equal(a, b.running_mean) and torch.equal(v, b.running_var) and torch.equal(n, b.num_batches_tracked)
               for (a, v, n), b in zip(stats, bns))
    assert any(not torch.equal(w, b.weight) for w, b in zip(weights, bns))


def test_freeze_bn_takes_true_false_or_stats_only():
    from pmlbal.command import command_for
    from pmlbal.config import TrainConfig

    with pytest.raises(ValueError, match="freeze_bn must be true, false or 'stats', got 'all'"):
        TrainConfig(freeze_bn="all").resolved()
    assert command_for(TrainConfig(freeze_bn="stats").resolved()).endswith("--freeze-bn-stats")
