"""Run configurations from files and records (`pmlbal.config_file`; train/bench/sweep --config, --from-record)."""

from __future__ import annotations

import json
from dataclasses import asdict, fields

import pytest
from click.testing import CliRunner

from pmlbal.cli import main
from pmlbal.config_file import config_from_record, read_config_file
from pmlbal.config import TrainConfig

YAML = """\
# a run as a user writes it
dataset: digits
loss: KCLLoss
loss_kwargs: {t: 0.5}
epochs: 3
lr: 1e-3          # PyYAML alone would read this as the string '1e-3'
batch_size: 40
eval_split: val
freeze_bn: true
"""


def test_yaml_and_json_give_the_same_values(tmp_path):
    (tmp_path / "a.yaml").write_text(YAML)
    values = read_config_file(tmp_path / "a.yaml")
    (tmp_path / "a.json").write_text(json.dumps({k: v for k, v in values.items() if k != "train_split"}))
    assert read_config_file(tmp_path / "a.json") == values
    assert values == {"dataset": "digits", "loss": "KCLLoss", "loss_kwargs": {"t": 0.5}, "epochs": 3, "lr": 0.001,
                      "batch_size": 40, "eval_split": "val", "train_split": "train-sub", "freeze_bn": True}
    assert TrainConfig(**values).resolved().lr == 0.001  # a TrainConfig as it stands


@pytest.mark.parametrize("text, words", [
    ("epoch: 3\nbatchsize: 8\n", ["'epoch' (did you mean 'epochs'?)", "'batchsize' (did you mean 'batch_size'?)"]),
    ("zzz: 1\n", ["unknown configuration key(s) 'zzz'"]),
    ("epochs: three\n", ["epochs must be an integer or null, got 'three'"]),
    ("epochs: 2.5\n", ["epochs must be an integer"]),
    ("freeze_bn: 1\n", ["freeze_bn must be true/false"]),
    ("lr: fast\n", ["lr must be a number or null"]),
    ("loss_kwargs: [1, 2]\n", ["loss_kwargs must be a mapping"]),
    ("- epochs\n- 3\n", ["expected a mapping", "list"]),
    ("epochs: [3\n", ["not valid YAML", "line"]),
])
def test_bad_files_are_refused_naming_the_problem(tmp_path, text, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        read_config_file(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message


def test_bad_json_is_named_with_its_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"epochs": 3,\n "lr": }')
    with pytest.raises(ValueError, match=r"not valid JSON .* line 2"):
        read_config_file(path)


def test_every_config_field_of_a_record_is_accepted(tmp_path):
    cfg = TrainConfig(loss_kwargs={"balance": 2.0}, epochs=2, lr=3e-4, tuned_from="sqlite:///x.db#s", tuned_runs=3)
    record = {"schema": 1, "run_id": "r", "config": asdict(cfg), "final": {}, "config_key": "k", "seed": 0,
              "command": "pmlbal train"}
    (tmp_path / "r.json").write_text(json.dumps(record))
    assert TrainConfig(**config_from_record(tmp_path / "r.json")) == cfg
    assert {f.name for f in fields(TrainConfig)} == set(asdict(cfg))


@pytest.fixture
def trained(monkeypatch):
    """The configuration the CLI hands to the trainer (no training: the CLI's merging is under test)."""
    import pmlbal.bench  # noqa: F401  (imported now, it binds the real `train`, not the stand-in below)
    import pmlbal.train

    seen = []
    monkeypatch.setattr(pmlbal.train, "train", lambda cfg, **kw: seen.append((cfg, kw)))
    return seen


def test_flags_given_override_the_file_and_the_rest_comes_from_it(tmp_path, trained):
    (tmp_path / "run.yaml").write_text(YAML)
    # --eval-split test is the flag's default value, given explicitly: it still overrides the file's val.
    result = CliRunner().invoke(main, ["train", "--config", str(tmp_path / "run.yaml"), "--epochs", "2",
                                       "--eval-split", "test", "--loss-arg", "t=0.2", "--seed", "4"])
    assert result.exit_code == 0, result.output
    cfg, kw = trained[-1]
    assert (cfg.epochs, cfg.eval_split, cfg.train_split, cfg.seed) == (2, "test", "train", 4)  # flags
    assert (cfg.loss, cfg.lr, cfg.batch_size, cfg.freeze_bn) == ("KCLLoss", 0.001, 40, True)  # file
    assert cfg.loss_kwargs == {"t": 0.2}  # --loss-arg adds to (here: replaces a value of) the file's arguments
    assert kw["resume"] is True and kw["tensorboard"] is None  # an interrupted run continues by default

    CliRunner().invoke(main, ["train", "--config", str(tmp_path / "run.yaml")])
    cfg, _ = trained[-1]
    assert (cfg.epochs, cfg.eval_split, cfg.train_split, cfg.seed, cfg.loss_kwargs) == (3, "val", "train-sub", 0,
                                                                                          {"t": 0.5})
    CliRunner().invoke(main, ["train", "--config", str(tmp_path / "run.yaml"), "--loss", "DHELLoss(temperature=0.3)"])
    cfg, _ = trained[-1]
    assert (cfg.loss, cfg.loss_kwargs) == ("DHELLoss", {"temperature": 0.3})  # a new loss brings its own arguments


def test_from_record_with_a_flag_changes_only_that_field(tmp_path, trained):
    cfg = TrainConfig(loss="KCLLoss", loss_kwargs={"t": 0.5}, epochs=2, batch_size=20, samples_per_class=10,
                      results_dir=str(tmp_path))
    record = {"schema": 1, "run_id": "r", "config": asdict(cfg), "final": {}, "config_key": "k", "seed": 0,
              "command": "pmlbal train"}
    (tmp_path / "r.json").write_text(json.dumps(record))
    result = CliRunner().invoke(main, ["train", "--from-record", str(tmp_path / "r.json"), "--seed", "1", "--resume"])
    assert result.exit_code == 0, result.output
    got, kw = trained[-1]
    assert got == TrainConfig(**{**asdict(cfg), "seed": 1}) and kw["resume"] is True
    assert "nothing to resume" in result.output  # e.g. a flag that differs from the interrupted run's


@pytest.mark.parametrize("args, word", [
    (["train", "--config", "{f}", "--from-record", "{f}"], "not both"),
    (["train", "--config", "{bad}"], "did you mean 'epochs'"),
    (["train", "--from-record", "{f}"], "unreadable record"),
    (["bench", "--config", "{f}"], "loss is not a shared option of `pmlbal bench`"),
    (["sweep", "--config", "{f}"], "loss is not a shared option of `pmlbal sweep`"),
    (["bench", "--config", "nosuchfile.yaml"], "neither default, tuned nor an existing file"),
    (["bench", "--config", "tuned", "--config", "default"], "at most one"),
])
def test_bad_config_options_one_line_error(tmp_path, trained, args, word):
    (tmp_path / "f.yaml").write_text(YAML)
    (tmp_path / "bad.yaml").write_text("epoch: 3\n")
    args = [a.format(f=tmp_path / "f.yaml", bad=tmp_path / "bad.yaml") for a in args]
    result = CliRunner().invoke(main, args + ["--results-dir", str(tmp_path)])
    assert result.exit_code != 0 and word in result.output and "Traceback" not in result.output
    assert not trained


def test_bench_and_sweep_take_the_shared_options_from_a_file(tmp_path, monkeypatch):
    import pmlbal.bench

    calls = []
    monkeypatch.setattr(pmlbal.bench, "run_bench", lambda base, specs, seeds, **kw: calls.append((base, specs, kw)) or [{}])
    (tmp_path / "shared.yaml").write_text("epochs: 2\nbatch_size: 20\nsamples_per_class: 10\nlr: 2e-4\n")
    common = ["--config", str(tmp_path / "shared.yaml"), "--results-dir", str(tmp_path)]
    result = CliRunner().invoke(main, ["bench", "--losses", "KCLLoss", "--epochs", "3", "--config", "tuned"] + common)
    assert result.exit_code == 0, result.output
    base, specs, kw = calls[-1]
    assert (base.epochs, base.batch_size, base.lr, specs) == (3, 20, 2e-4, ["KCLLoss"])
    assert kw["tuned_storage"] == f"sqlite:///{tmp_path / 'tuning.db'}"

    result = CliRunner().invoke(main, ["sweep", "--balance", "1,2"] + common)
    assert result.exit_code == 0, result.output
    base, specs, _ = calls[-1]
    assert (base.epochs, base.batch_size) == (2, 20)  # no --batch-sizes: the file's batch size
    assert specs == ["BalancedNTXentLoss(balance=1.0)", "BalancedNTXentLoss(balance=2.0)"]
    CliRunner().invoke(main, ["sweep", "--balance", "1", "--batch-sizes", "40"] + common)
    assert calls[-1][0].batch_size == 40


@pytest.mark.slow
def test_from_record_reproduces_the_recorded_run(tmp_path):
    common = ["--results-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache")]
    first = CliRunner().invoke(main, ["train", "--backbone", "test_resnet", "--embedding-dim", "16", "--epochs", "1",
                                      "--loss", "KCLLoss(t=0.5)", "--batch-size", "40", "--samples-per-class", "10"]
                               + common)
    assert first.exit_code == 0, first.output
    path = next((tmp_path / "runs").glob("*.json"))
    a = json.loads(path.read_text())
    again = CliRunner().invoke(main, ["train", "--from-record", str(path)] + common)
    assert again.exit_code == 0, again.output
    (rerun,) = (tmp_path / "runs").glob("*.json")  # one run per configuration and seed: it replaced the first
    assert "replaced the earlier record" in again.output and rerun != path
    b = json.loads(rerun.read_text())
    assert a["config"] == b["config"] and a["config_key"] == b["config_key"] and a["command"] == b["command"]
    assert a["final"] == b["final"]  # same configuration and seed, same CPU: the same run
