"""Published protocols: each preset equals its source's values; the CLI applies them under explicit
flags; every recorded command re-parses to its config; a miniature CUB trains under each preset."""

import json
import shlex
from dataclasses import asdict, fields, replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from pmlbal.cli import main
from pmlbal.config import protocol_config
from pmlbal.protocols import PROTOCOLS, list_protocols, protocol_values
from pmlbal.command import command_for
from pmlbal.config import TrainConfig
from tests.data.layouts import make_cub

# Written from the sources, independently of pmlbal/protocols.py:
# Proxy-Anchor README.md commands (ResNet-50 for CUB and Cars, Inception-BN for SOP) + code/train.py defaults.
PROXY_ANCHOR_COMMON = dict(backbone="resnet50.tv_in1k", pretrained="timm", embedding_dim=512, pooling="avg+max",
                           head_init="kaiming", freeze_bn=True, optimizer="adamw", lr=1e-4, weight_decay=1e-4,
                           loss_lr=None, head_lr=None, schedule="step", lr_gamma=0.5, warmup_epochs=0.0,
                           clip_grad_value=10.0, epochs=60, sampler="random", crop_scale=0.08, input_size=224,
                           cache_size=256, cache_mode="aspect")
TABLES = {
    ("proxy-anchor", "cub"): {**PROXY_ANCHOR_COMMON, "batch_size": 120, "freeze_trunk_epochs": 5, "lr_step_epochs": 5},
    ("proxy-anchor", "cars"): {**PROXY_ANCHOR_COMMON, "batch_size": 120, "freeze_trunk_epochs": 5,
                               "lr_step_epochs": 10},
    ("proxy-anchor", "sop"): {**PROXY_ANCHOR_COMMON, "batch_size": 180, "lr": 6e-4, "freeze_bn": False,
                              "freeze_trunk_epochs": 1, "lr_step_epochs": 20, "lr_gamma": 0.25},
    # powerful-benchmarker config_optimizers/default.yaml etc. + the MLRC paper's setting.
    # v0.9.32 (the release the paper's docs install): weight decay 1e-4; freeze_batchnorm puts BN in
    # eval mode while its affine parameters train.
    ("mlrc", "cub"): dict(backbone="resnet50.tv_in1k", pretrained="timm", embedding_dim=128, freeze_bn="stats",
                          pooling="avg", batch_size=32, samples_per_class=4, optimizer="rmsprop", lr=1e-6, head_lr=1e-6,
                          loss_lr=1e-6, weight_decay=1e-4, schedule="constant", warmup_epochs=0.0, crop_scale=0.16,
                          input_size=224, cache_size=256, cache_mode="aspect", cv_folds=4, lead_metric="map_at_r",
                          sampler="m-per-class"),
    # Revisiting_Deep_Metric_Learning_PyTorch parameters.py defaults.
    ("roth", "cub"): dict(backbone="resnet50.tv_in1k", pretrained="timm", embedding_dim=128, freeze_bn="stats",
                          pooling="avg", batch_size=112, samples_per_class=2, optimizer="adam", lr=1e-5,
                          weight_decay=4e-4, epochs=150, schedule="constant", warmup_epochs=0.0, crop_scale=0.08,
                          input_size=224, cache_size=256, cache_mode="aspect", sampler="m-per-class"),
}


@pytest.mark.parametrize("name, dataset", sorted(TABLES))
def test_each_preset_resolves_to_its_table(name, dataset):
    assert protocol_values(name, dataset) == TABLES[name, dataset]
    cfg = protocol_config(name, dataset).resolved()
    assert cfg.protocol == name
    for k, v in TABLES[name, dataset].items():
        assert getattr(cfg, k) == v, k
    assert set(TABLES[name, dataset]) <= {f.name for f in fields(TrainConfig)}


def test_presets_are_all_tabled_and_cite_a_source():
    assert set(list_protocols()) == {n for n, _ in TABLES}
    for p in PROTOCOLS.values():
        assert "/" in p.source and p.source.split()[0].count("/") == 1  # owner/repo first


def test_explicit_values_override_and_bad_names_are_refused():
    cfg = protocol_config("roth", "cars", lr=3e-5, backbone="resnet10t")
    assert (cfg.lr, cfg.backbone, cfg.batch_size) == (3e-5, "resnet10t", 112)
    with pytest.raises(ValueError, match="has values for cars, cub, sop, not for data set 'digits'"):
        protocol_config("proxy-anchor", "digits")
    with pytest.raises(ValueError, match="unknown protocol 'nope'"):
        replace(TrainConfig(), protocol="nope").resolved()
    with pytest.raises(ValueError, match="not TrainConfig fields: lrr"):
        protocol_config("roth", "cub", lrr=1)


def _parsed(command: str, monkeypatch) -> TrainConfig:
    """The config `pmlbal train` builds from `command`, without training."""
    import pmlbal.bench  # noqa: F401  (imported before the stand-in, or it would bind it for the session)
    import pmlbal.train

    seen = []
    monkeypatch.setattr(pmlbal.train, "train", lambda cfg, on_epoch=None, **kw: seen.append(cfg))
    args = shlex.split(command)
    assert args[:2] == ["pmlbal", "train"]
    result = CliRunner().invoke(main, args[1:])
    assert result.exit_code == 0, (command, result.output)
    return seen[0]


BOOKKEEPING = {"results_dir", "cache_dir", "progress", "tuned_from", "tuned_runs", "tuned_by", "save_model"}


def _same(a: TrainConfig, b: TrainConfig) -> bool:
    return {k: v for k, v in asdict(a.resolved()).items() if k not in BOOKKEEPING} == {
        k: v for k, v in asdict(b.resolved()).items() if k not in BOOKKEEPING}


def test_cli_applies_a_preset_under_explicit_flags(monkeypatch, tmp_path):
    cfg = _parsed(f"pmlbal train --dataset cub --root {tmp_path} --protocol proxy-anchor --lr 2e-4 --pretrained none "
                  "--no-freeze-bn --clip-grad-value none", monkeypatch)
    expected = protocol_config("proxy-anchor", "cub", root=str(tmp_path), lr=2e-4, pretrained=None, freeze_bn=False,
                               clip_grad_value=None)
    assert _same(cfg, expected) and cfg.loss_lr is None  # proxies follow the new lr at 100x


def test_every_recorded_command_reparses_to_its_config(monkeypatch, tmp_path):
    configs = [
        TrainConfig(),
        TrainConfig(eval_split="val", train_split="train-sub"),  # a tuning trial: no --train-split flag needed
        TrainConfig(eval_split="val", train_split="train"),
        TrainConfig(loss="NTXentLoss", loss_kwargs={"temperature": 0.1}, seed=2, batch_size=40, lr=3e-4,
                    weight_decay=0.0, warmup_epochs=0.5, cache_size=40, input_size=28, crop_scale=0.5, eval_every=2,
                    sampler="spectral", resample_every=2, freeze_bn=True, pretrained="timm", backbone="resnet18d.ra4_e3600_r224_in1k",
                    pooling="avg+max", head_init="kaiming", head_lr=1e-3, loss_lr=5e-2, optimizer="rmsprop",
                    schedule="step", lr_step_epochs=3, lr_gamma=0.25, freeze_trunk_epochs=1, clip_grad_value=5.0,
                    cache_mode="aspect", eval_on="backbone", cv_folds=3, lead_metric="map_at_r", device="cpu"),
        protocol_config("proxy-anchor", "cub", root=str(tmp_path)),
        protocol_config("proxy-anchor", "sop", root=str(tmp_path), freeze_bn=True, pretrained=None, epochs=3,
                        clip_grad_value=None, sampler="m-per-class"),
        protocol_config("mlrc", "cars", root=str(tmp_path), cv_folds=0, eval_split="val", train_split="train-sub"),
        TrainConfig(eval_split="val", train_split="train-sub", val_folds=3, val_fold=2, seed=5),  # a tuning fold
        TrainConfig(freeze_bn="stats"),
    ]
    # The configurations of the committed records, too.
    for path in sorted(Path(__file__).parents[1].glob("results/runs/*.json")):
        configs.append(TrainConfig(**json.loads(path.read_text())["config"]))
    for cfg in configs:
        cfg = cfg.resolved()
        assert _same(_parsed(command_for(cfg), monkeypatch), cfg), command_for(cfg)


def test_freeze_bn_stats_flag_sets_stats_and_its_command_reparses(monkeypatch, tmp_path):
    assert _parsed("pmlbal train --freeze-bn-stats", monkeypatch).freeze_bn == "stats"
    (tmp_path / "run.yaml").write_text("freeze_bn: true\n")
    assert _parsed(f"pmlbal train --config {tmp_path / 'run.yaml'} --freeze-bn-stats", monkeypatch).freeze_bn == "stats"
    for cfg in (TrainConfig(freeze_bn="stats", epochs=2),
                protocol_config("proxy-anchor", "cub", root=str(tmp_path), freeze_bn="stats")):  # the preset: True
        cfg = cfg.resolved()
        assert "--freeze-bn-stats" in shlex.split(command_for(cfg))
        assert _same(_parsed(command_for(cfg), monkeypatch), cfg), command_for(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["proxy-anchor", "mlrc", "roth"])
def test_miniature_cub_trains_under_each_preset(name, tmp_path):
    # Four images a class: the presets' m = 4 may not exceed the largest class (issue 16).
    root = make_cub(tmp_path / "cub", per_class=4)
    args = ["train", "--dataset", "cub", "--root", str(root), "--protocol", name, "--loss", "ProxyAnchorLoss",
            "--backbone", "resnet10t", "--pretrained", "none", "--epochs", "2", "--input-size", "32",
            "--cache-size", "36", "--results-dir", str(tmp_path / "res"), "--cache-dir", str(tmp_path / "cache")]
    if name == "mlrc":
        args += ["--cv-folds", "2", "--epochs", "1"]  # two folds are enough to show the concatenation
    if name == "proxy-anchor":
        args += ["--eval-every", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    record = json.loads(Path(result.output.split("record: ")[1].split()[0]).read_text())
    assert record["config"]["protocol"] == name and f"--protocol {name}" in record["command"]
    assert record["config"]["cache_mode"] == "aspect" and list((tmp_path / "cache").glob("*aspect*.boxes.npy"))
    if name == "mlrc":
        assert [e["fold"] for e in record["epochs"]] == [0, 1]
        # MLRC's validation: each fold's model on the train classes it did not see
        assert len(record["cv_val"]) == 2 and all(0 <= m["map_at_r"] <= 1 for m in record["cv_val"])
    if name == "proxy-anchor":  # per-epoch test metrics and the best epoch among them
        assert all("metrics" in e for e in record["epochs"]) and record["best"]["epoch"] in (1, 2)
    from pmlbal.leaderboard import write_leaderboards

    write_leaderboards(tmp_path / "res", "cub", plots=False)
    assert f"[protocol {name}]" in (tmp_path / "res" / "cub.md").read_text()


def test_a_config_file_can_name_a_preset_and_a_protocol_flag_overrides_a_file(monkeypatch, tmp_path):
    named = tmp_path / "named.json"
    named.write_text(json.dumps({"dataset": "cub", "protocol": "roth", "epochs": 3}))
    cfg = _parsed(f"pmlbal train --config {named} --root {tmp_path} --lr 2e-5", monkeypatch)
    assert _same(cfg, protocol_config("roth", "cub", root=str(tmp_path), epochs=3, lr=2e-5))
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"dataset": "cub", "embedding_dim": 64, "lr": 0.5}))
    cfg = _parsed(f"pmlbal train --config {plain} --root {tmp_path} --protocol roth", monkeypatch)
    assert cfg.protocol == "roth" and cfg.lr == 1e-5 and cfg.embedding_dim == 128  # the flag's preset over the file
