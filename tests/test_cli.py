"""CLI: bad options refused with a one-line error; dataset check; end-to-end digits runs (slow)."""

import json
import re

import pytest
from click.testing import CliRunner

from pmlbal.cli import main
from tests.data.layouts import make_sop


@pytest.mark.parametrize(
    "args, word",
    [
        (["train", "--dataset", "imagenet"], "imagenet"),
        (["train", "--epochs", "0"], "epochs"),
        (["train", "--lr", "-1"], "lr"),
        (["train", "--loss", "NoSuchLoss", "--epochs", "1"], "unknown loss"),
        (["train", "--loss-arg", "temperature"], "KEY=VALUE"),
        (["train", "--batch-size", "30", "--samples-per-class", "4"], "multiple of samples_per_class"),
        (["train", "--loss", "BalancedNTXentLoss(temperature=-1)"], "temperature"),
        (["train", "--loss", "BalancedNTXentLoss", "--loss-arg", "tmperature=0.1"], "unexpected keyword argument 'tmperature'"),
        (["train", "--loss", "NTXentLoss", "--loss-arg", "tmperature=0.1"], "unexpected keyword argument 'tmperature'"),
        (["tune", "--storage", "nosuchdb://host/x", "--budget", "1"], "cannot open storage nosuchdb://host/x"),
        (["bench", "--seeds", "0"], "seeds"),
        (["sweep", "--balance", "a,b"], "comma lists"),
        (["datasets", "check", "sop", "--root", "/nonexistent/place"], "Ebay_train.txt"),
        (["train", "--protocol", "proxy-anchor"], "has values for cars, cub, sop, not for data set 'digits'"),
        (["train", "--protocol", "nope"], "'nope' is not one of"),
        (["train", "--backbone", "resnet50.nope"], "unknown pretrained tag 'nope'"),
        (["train", "--head-lr", "fast"], "neither a number nor 'none'"),
        (["train", "--loss-lr", "-1"], "must be > 0"),
        (["train", "--cv-folds", "1"], "cv_folds must be 0 (off) or >= 2"),
        (["train", "--pooling", "gem"], "'gem' is not one of"),
        (["train", "--freeze-bn-stats", "--no-freeze-bn"], "--freeze-bn-stats conflicts with --freeze-bn/--no-freeze-bn"),
        (["bench", "--freeze-bn", "--freeze-bn-stats"], "--freeze-bn-stats conflicts with --freeze-bn/--no-freeze-bn"),
        (["bench", "--protocol", "roth", "--losses", "ProxyAnchorLoss(margin=0.1),KCLLoss(t=-1)"], "t must be a positive"),
    ],
)
def test_bad_options_one_line_error(args, word, tmp_path):
    result = CliRunner().invoke(main, args + (["--results-dir", str(tmp_path)] if args[0] == "train" else []))
    assert result.exit_code != 0
    assert word.lower() in result.output.lower()
    assert "Traceback" not in result.output


def test_storage_that_is_not_a_database_is_refused_and_left_alone(tmp_path):
    junk = tmp_path / "tuning.db"
    junk.write_bytes(b"my notes, not a database")
    for args in (["tune", "--show"], ["tune", "--budget", "1"], ["tune-worker", "--study", "s"]):
        result = CliRunner().invoke(main, args + ["--storage", f"sqlite:///{junk}"])
        assert result.exit_code == 1 and "cannot open storage" in result.output and "not a database" in result.output
    result = CliRunner().invoke(main, ["tune", "--show", "--storage", "postgresql://me:hunter2@127.0.0.1:1/x"])
    assert result.exit_code == 1 and "hunter2" not in result.output and "***" in result.output
    assert junk.read_bytes() == b"my notes, not a database"


@pytest.mark.parametrize("args", [
    ["sweep", "--balance", "1,-2", "--epochs", "1"],
    ["bench", "--losses", "BalancedNTXentLoss,KCLLoss(t=-1)", "--epochs", "1"],
    ["bench", "--losses", "BalancedNTXentLoss,DHELLoss(tmperature=0.3)", "--epochs", "1"],
])
def test_a_bad_loss_late_in_the_list_fails_before_any_training(args, tmp_path):
    result = CliRunner().invoke(main, args + ["--results-dir", str(tmp_path)])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "Error:" in result.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_datasets_check_counts_and_names_missing_file(tmp_path):
    root = make_sop(tmp_path)
    ok = CliRunner().invoke(main, ["datasets", "check", "sop", "--root", str(root)])
    assert ok.exit_code == 0 and "sop train" in ok.output and "12 images" in ok.output
    (root / "bicycle_final" / "8_1.JPG").unlink()
    bad = CliRunner().invoke(main, ["datasets", "check", "sop", "--root", str(root)])
    assert bad.exit_code == 1 and "8_1.JPG" in bad.output


@pytest.mark.slow
def test_training_beats_untrained_model_on_digits(tmp_path):
    from pmlbal.train import train
    from pmlbal.config import TrainConfig

    record = train(TrainConfig(dataset="digits", loss="BalancedNTXentLoss", loss_kwargs={"balance": 4.0},
                               epochs=4, results_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"), progress=False))
    before, after = record["initial"], record["final"]
    # An untrained random-init CNN already reaches ~0.9 Recall@1 on the unseen digits 5-9.
    assert before["recall@1"] > 0.8
    assert after["recall@1"] > before["recall@1"] + 0.03
    assert after["map_at_r"] > before["map_at_r"] + 0.1
    saved = json.loads(open(record["path"]).read())
    assert saved["final"] == after and saved["versions"]["torch"] and saved["images_per_s"] > 0
    assert len(saved["steps"]) == 4 * 18 and {"pos_term", "entropy_term"} <= set(saved["steps"][0])


@pytest.mark.slow
def test_bench_resumes_and_prints_leaderboard(tmp_path):
    args = ["bench", "--dataset", "digits", "--losses", "NTXentLoss(temperature=0.1),KCLLoss", "--epochs", "1",
            "--results-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache")]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "| 1 |" in first.output and "KCLLoss" in first.output
    # Not a terminal: a line per epoch of each run instead of bars.
    assert re.findall(r"digits/(\w+) seed 0: epoch 1/1: loss", first.output) == ["NTXentLoss", "KCLLoss"]
    second = CliRunner().invoke(main, args)
    assert second.output.count("recorded already") == 2 and "epoch 1/1" not in second.output
    assert len(list((tmp_path / "runs").glob("*.json"))) == 2
    assert (tmp_path / "digits_recall.png").exists() and (tmp_path / "digits.csv").exists()


@pytest.mark.slow
def test_train_prints_a_line_per_epoch_when_stdout_is_not_a_terminal(tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "pmlbal.cli", "train", "--dataset", "digits", "--epochs", "2", "--batch-size", "20",
           "--results-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache")]
    # Pipes, as in CI or `| tee`: each line must arrive when its epoch ends, not when the run does.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    while first and "epoch 1/2" not in first:
        first = proc.stdout.readline()
    assert not list((tmp_path / "runs").glob("*.json")), "the epoch line came only after the run ended"
    rest, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    lines = re.findall(r"^digits/BalancedNTXentLoss seed 0: epoch (\d)/2: loss ([0-9.]+), ([0-9.]+) s$",
                       first + rest, re.M)
    assert [int(e) for e, _, _ in lines] == [1, 2]
    record = json.loads(next((tmp_path / "runs").glob("*.json")).read_text())
    assert [float(loss) for _, loss, _ in lines] == [round(e["train_loss"], 4) for e in record["epochs"]]
    assert sum(float(s) for _, _, s in lines) == pytest.approx(record["train_time_s"], abs=0.1)
    assert "it/s" not in rest + err and "%|" not in rest + err  # no bars off a terminal


@pytest.mark.slow
def test_cli_train_on_miniature_sop_layout(tmp_path):
    root = make_sop(tmp_path / "sop", train_classes=6, test_classes=5, per_class=4)
    args = ["train", "--dataset", "sop", "--root", str(root), "--backbone", "resnet10t", "--epochs", "1",
            "--batch-size", "8", "--samples-per-class", "4", "--embedding-dim", "16",
            "--results-dir", str(tmp_path / "res"), "--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "recall@1=" in result.output
    caches = list((tmp_path / "cache").glob("*.npy"))
    assert len(caches) == 2  # train and test decoded once


@pytest.mark.slow
def test_train_with_spectral_sampler_resamples_each_epoch(tmp_path, monkeypatch):
    from pmlbal.samplers import SpectralBatchSampler

    updates = []
    original = SpectralBatchSampler.update

    def spy(self, embeddings, *args):
        updates.append(tuple(embeddings.shape))
        return original(self, embeddings, *args)

    monkeypatch.setattr(SpectralBatchSampler, "update", spy)
    args = ["train", "--dataset", "digits", "--sampler", "spectral", "--resample-every", "1", "--epochs", "2",
            "--batch-size", "20", "--samples-per-class", "10", "--results-dir", str(tmp_path),
            "--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert updates == [(901, 64), (901, 64)]
    record = json.loads(open(next((tmp_path / "runs").glob("*.json"))).read())
    assert record["config"]["sampler"] == "spectral" and "--sampler spectral" in record["command"]


@pytest.mark.slow
def test_torchrun_two_processes_train_on_the_global_batch(tmp_path):
    """`torchrun --nproc_per_node 2`: gloo on the CPU, DDP for the model, PML's DistributedLossWrapper
    for the loss. Both ranks log the same epoch loss (each computed over the gathered global batch,
    not its own half), and rank 0 alone writes the run's one record."""
    import re
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pmlbal.cli", "train", "--dataset", "digits", "--epochs", "1", "--device", "cpu",
           "--results-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    losses = re.findall(r"\[rank [01]/2\]: epoch 1/1: loss ([0-9.]+)", out.stdout)
    assert len(losses) == 2 and losses[0] == losses[1]
    records = list((tmp_path / "runs").glob("*.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["world_size"] == 2 and record["final"]["recall@1"] > 0.5


@pytest.mark.slow
def test_train_save_model_then_eval_reproduces_the_recorded_metrics(tmp_path):
    common = ["--results-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache")]
    trained = CliRunner().invoke(main, ["train", "--dataset", "digits", "--epochs", "1", "--save-model"] + common)
    assert trained.exit_code == 0, trained.output
    record = json.loads(next((tmp_path / "runs").glob("*.json")).read_text())
    ckpt = record["model_path"]
    evaluated = CliRunner().invoke(main, ["eval", ckpt, "--cache-dir", str(tmp_path / "cache")])
    assert evaluated.exit_code == 0, evaluated.output
    got = dict(kv.split("=") for kv in evaluated.output.split())
    for k in ("recall@1", "map_at_r", "r_precision"):
        assert float(got[k]) == pytest.approx(record["final"][k], abs=1e-4)


def test_eval_refuses_missing_and_foreign_files(tmp_path):
    missing = CliRunner().invoke(main, ["eval", str(tmp_path / "nope.pt")])
    assert missing.exit_code != 0 and "checkpoint not found" in missing.output
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    bad = CliRunner().invoke(main, ["eval", str(junk)])
    assert bad.exit_code != 0 and "not a readable pmlbal checkpoint" in bad.output and "Traceback" not in bad.output
    import torch

    torch.save({"weights": 1}, tmp_path / "other.pt")
    other = CliRunner().invoke(main, ["eval", str(tmp_path / "other.pt")])
    assert other.exit_code != 0 and "not a pmlbal checkpoint" in other.output


def test_tune_help_offers_no_option_tune_ignores():
    tune_help = CliRunner().invoke(main, ["tune", "--help"])
    assert tune_help.exit_code == 0 and "--eval-split" not in tune_help.output
    assert "--metric" in tune_help.output and "--dataset" in tune_help.output  # the shared options stay
    for command in ("train", "bench", "sweep"):
        assert "--eval-split" in CliRunner().invoke(main, [command, "--help"]).output
    refused = CliRunner().invoke(main, ["tune", "--eval-split", "test"])
    assert refused.exit_code == 2 and "No such option '--eval-split'" in refused.output


def test_license_matches_pyproject_and_changelog_exists():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert 'license = "MIT"' in (root / "pyproject.toml").read_text()
    assert (root / "LICENSE").read_text().startswith("MIT License")
    assert "## [Unreleased]" in (root / "CHANGELOG.md").read_text()


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "-x", "a b", "x" * 250])
def test_a_study_name_that_could_leave_the_results_folder_is_refused_before_anything_is_written(tmp_path, name):
    for args in (["tune", "--show"], ["tune-worker", "--storage", f"sqlite:///{tmp_path}/t.db"]):
        out = CliRunner().invoke(main, [*args, "--study", name, "--results-dir", str(tmp_path)])
        assert out.exit_code == 2 and "a study name is also a file name" in out.output, out.output
    assert list(tmp_path.iterdir()) == [] and not (tmp_path.parent / "x").exists()


def test_a_worker_heartbeat_longer_than_half_the_coordinators_grace_is_refused(tmp_path):
    import optuna

    from pmlbal.tune.workers import GRACE

    url = f"sqlite:///{tmp_path}/t.db"
    study = optuna.create_study(storage=url, study_name="s", direction="maximize")
    study.set_user_attr(GRACE, 20.0)
    out = CliRunner().invoke(main, ["tune-worker", "--storage", url, "--study", "s", "--heartbeat", "30",
                                    "--results-dir", str(tmp_path)])
    assert out.exit_code == 1 and "declares a trial lost after 20 s" in out.output and "at most 10" in out.output


def test_train_says_when_its_run_collapsed(tmp_path, monkeypatch):
    import pmlbal.train

    record = {"final": {"map_at_r": 0.177, "effective_rank": 1.04}, "path": str(tmp_path / "r.json"),
              "collapse": {"reason": "effective rank 1.04 < 1.5 (the embeddings lie on about one line)"}}
    monkeypatch.setattr(pmlbal.train, "train", lambda cfg, **kw: record)
    out = CliRunner().invoke(main, ["train", "--dataset", "digits", "--lr", "3e3", "--results-dir", str(tmp_path)])
    assert out.exit_code == 0 and "warning: this run collapsed: effective rank 1.04" in out.output
    record["collapse"] = {"reason": None}
    out = CliRunner().invoke(main, ["train", "--dataset", "digits", "--results-dir", str(tmp_path)])
    assert out.exit_code == 0 and "collapsed" not in out.output


def test_train_continues_an_interrupted_run_by_default_and_fresh_starts_again(tmp_path, monkeypatch):
    import pmlbal.train

    seen = []
    monkeypatch.setattr(pmlbal.train, "train", lambda cfg, **kw: seen.append(kw["resume"]) or
                        {"final": {}, "path": str(tmp_path / "r.json")})
    for extra in ([], ["--fresh"], ["--resume"]):
        out = CliRunner().invoke(main, ["train", "--results-dir", str(tmp_path), *extra])
        assert out.exit_code == 0, out.output
    assert seen == [True, False, True]
    assert "nothing to resume" not in CliRunner().invoke(main, ["train", "--results-dir", str(tmp_path)]).output


@pytest.mark.results_dir_guard
def test_a_run_into_the_checkouts_committed_results_needs_the_folder_named(tmp_path, monkeypatch):
    import pmlbal.train

    checkout = tmp_path / "pmlbal-checkout"
    for d in (".git", "pmlbal", "results/runs"):
        (checkout / d).mkdir(parents=True)
    (checkout / "pmlbal" / "__init__.py").write_text("")
    monkeypatch.chdir(checkout)
    monkeypatch.setattr(pmlbal.train, "train", lambda cfg, **kw: {"final": {}, "path": cfg.results_dir})
    out = CliRunner().invoke(main, ["train"])
    assert out.exit_code == 2 and "is pmlbal's committed results folder" in out.output
    assert CliRunner().invoke(main, ["train", "--results-dir", "results"]).exit_code == 0  # named: allowed
    monkeypatch.setenv("HOME", str(tmp_path))
    out = CliRunner().invoke(main, ["train", "--results-dir=~/mine"])
    assert out.exit_code == 0 and f"record: {tmp_path / 'mine'}" in out.output and not (checkout / "~").exists()


def test_datasets_check_takes_root_as_every_command_does_and_the_old_positional_with_a_note(tmp_path):
    bad = CliRunner().invoke(main, ["datasets", "check", "sop", "--root", str(tmp_path)])
    assert bad.exit_code == 1 and "Ebay_train.txt" in bad.output
    old = CliRunner().invoke(main, ["datasets", "check", "sop", str(tmp_path)])
    assert old.exit_code == 1 and "deprecated; use --root" in old.output and "Ebay_train.txt" in old.output
    both = CliRunner().invoke(main, ["datasets", "check", "sop", str(tmp_path), "--root", str(tmp_path)])
    assert both.exit_code == 2 and "give the root once" in both.output


def test_a_missing_root_is_reported_before_any_word_of_the_image_cache(tmp_path):
    out = CliRunner().invoke(main, ["train", "--dataset", "cub", "--results-dir", str(tmp_path)])
    assert out.exit_code == 1 and "a root folder is required" in out.output
    assert "preparing the image cache" not in out.output


def test_leaderboard_on_a_mistyped_folder_says_so_and_creates_nothing(tmp_path):
    out = CliRunner().invoke(main, ["leaderboard", "--results-dir", str(tmp_path / "typo")])
    assert out.exit_code == 1 and "does not exist" in out.output and not (tmp_path / "typo").exists()


def test_warnings_under_the_command_line_are_one_line_without_a_source_line(capsys):
    import warnings

    from pmlbal.cli.errors import show_warning

    show_warning(RuntimeWarning("cannot write the run checkpoint x.ckpt (disk full); evaluating without it\nmore"),
                 RuntimeWarning, "/x/pmlbal/train.py", 177)
    err = capsys.readouterr().err
    assert err == "warning: cannot write the run checkpoint x.ckpt (disk full); evaluating without it\n"
    assert warnings.showwarning is not show_warning  # set only while a command runs


def test_a_warning_repeated_during_one_command_is_shown_once(tmp_path, monkeypatch, capsys):
    """Fault trial re-check (issue 46, case 42): bench's plan and the run both warned of the same damaged file."""
    import warnings

    import click

    from pmlbal.cli import _Main

    @click.command()
    def twice():
        for _ in range(2):
            with warnings.catch_warnings():  # a library resetting the filters between the two
                warnings.simplefilter("default")
            warnings.warn("the same damaged file", RuntimeWarning)

    group = _Main(commands={"twice": twice})
    group(["twice"], standalone_mode=False)
    assert capsys.readouterr().err.count("warning: the same damaged file") == 1
