import json
import math

import optuna
import pytest
from click.testing import CliRunner

from pmlbal.cli import main
from pmlbal.config import TrainConfig
from pmlbal.tune import Dim, grid_values, make_spec, open_storage, open_study, pick, run_search, search_space
from pmlbal.tune.spaces import suggest


def analytic(dims):
    def objective(trial):
        v = {d.name: suggest(trial, d) for d in dims}
        return -(math.log2(v["balance"]) - 1) ** 2 - (math.log2(v["temperature"]) + 3) ** 2
    return objective


@pytest.mark.parametrize("search", ["cd", "tpe", "gp", "random", "grid"])
def test_run_search_resumes_in_sqlite(tmp_path, search):
    dims = [Dim("balance", "log", 1 / 16, 16), Dim("temperature", "log", 1 / 64, 1.0)]
    url = f"sqlite:///{tmp_path}/t.db"
    run_search(analytic(dims), dims, search, budget=6, storage=url, study_name="s")
    study = run_search(analytic(dims), dims, search, budget=14, storage=url, study_name="s")
    assert len(study.trials) == 14
    first = [tuple(sorted(t.params.items())) for t in study.trials if t.user_attrs.get("run", 0) == 0]
    if search in ("cd", "grid"):
        assert len(set(first)) == len(first)  # no point runs twice as a first run
    if search == "cd":  # the larger budget extends the same search: its last quarter confirms
        assert len(first) < 14 and pick(study).runs >= 2


def test_cd_picks_near_the_grid_optimum_with_a_quarter_of_its_trials():
    dims = [Dim("balance", "log", 1 / 16, 16), Dim("temperature", "log", 1 / 64, 1.0)]
    grid = run_search(analytic(dims), dims, "grid", budget=9 * 7, storage=None, study_name="g")
    cd = run_search(analytic(dims), dims, "cd", budget=16, storage=None, study_name="c")
    assert len(cd.trials) == 16 and pick(cd).value >= grid.best_value - 0.1


@pytest.mark.parametrize("search", ["tpe", "gp", "random"])
def test_confirm_spends_the_last_quarter_rerunning_the_top_three(search):
    dims = [Dim("balance", "log", 1 / 16, 16), Dim("temperature", "log", 1 / 64, 1.0)]
    values = iter(range(10_000))

    def noisy(trial):  # every call a new draw: re-runs see new noise
        return analytic(dims)(trial) + 0.01 * (next(values) % 7)

    study = run_search(noisy, dims, search, budget=16, storage=None, study_name="c", confirm=True)
    trials = study.trials
    assert len(trials) == 16 and all(t.user_attrs.get("run", 0) == 0 for t in trials[:12])
    reruns = trials[12:]
    first = sorted(trials[:12], key=lambda t: -t.value)[:3]
    top3 = {tuple(sorted(t.params.items())) for t in first}
    assert all(t.user_attrs["run"] >= 1 and tuple(sorted(t.params.items())) in top3 for t in reruns)
    best = pick(study)
    assert best.runs >= 2 and tuple(sorted(best.params.items())) in top3
    with pytest.raises(ValueError, match="--confirm is for tpe, gp and random"):
        run_search(noisy, dims, "grid", budget=4, storage=None, study_name="g", confirm=True)


def test_search_space_and_grid():
    dims = search_space("BalancedContrastiveLoss", "cub", overrides={"balance": (0.25, 4.0)})
    assert [d.name for d in dims] == ["balance", "batch_size", "pos_margin", "neg_margin", "lr"]  # the sweep's order
    assert grid_values(dims[0]) == [0.25, 0.5, 1.0, 2.0, 4.0]
    assert grid_values(dims[1]) == [32, 64, 128, 256, 512]
    with pytest.raises(ValueError, match="no default search space"):
        search_space("TripletMarginLoss")
    with pytest.raises(ValueError, match="cannot override"):
        search_space("KCLLoss", overrides={"temperature": (0.1, 1)})


@pytest.mark.slow
def test_cli_tune_with_two_workers_then_show_retrain_and_bench_tuned(tmp_path):
    """The whole tuning path on digits: two worker processes on a journal file spend a budget of 4
    (explore 1, descend 2, confirm 1: a re-run trains with the next seed), the trajectory and its
    plot, the pick retrained on test, and `bench --config tuned` finding it."""
    url = f"journal:{tmp_path}/tuning.log"
    common = ["--dataset", "digits", "--epochs", "1", "--results-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(main, ["tune", "--loss", "BalancedNTXentLoss", "--budget", "4", "--storage", url,
                                       "--study", "t", "--workers", "2", "--space", "balance=0.5:2", "--val-folds", "1"]
                               + common)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="t", storage=open_storage(url))
    trials = study.trials
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" and t.user_attrs.get("run_id") for t in trials)
    assert all(0.5 <= t.params["balance"] <= 2 for t in trials)
    records = {r["run_id"]: r for r in (json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json"))}
    rerun = [t for t in trials if t.user_attrs["run"] == 1]
    assert len(rerun) == 1 and records[rerun[0].user_attrs["run_id"]]["seed"] == 1  # run k: seed base + k
    best = pick(study)  # the highest mean: the re-run point, or a one-run point its second run fell below
    assert f"(mean of {best.runs} run" in result.output
    final = [r for r in records.values() if r["config"]["eval_split"] == "test"]
    assert len(final) == 1 and final[0]["config"]["tuned_from"] == f"{url}#t"
    assert final[0]["config"]["loss_kwargs"]["balance"] == best.params["balance"]
    assert final[0]["config"]["tuned_runs"] == best.runs
    assert "the pick on test:" in result.output

    shown = CliRunner().invoke(main, ["tune", "--show", "--storage", url, "--study", "t", "--results-dir", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert "pick so far" in shown.output and f"over {best.runs} run" in shown.output
    assert len(shown.output.splitlines()) >= 6
    assert (tmp_path / "tuning-t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    bench = CliRunner().invoke(main, ["bench", "--losses", "BalancedNTXentLoss", "--config", "tuned", "--storage", url]
                               + common)
    assert bench.exit_code == 0, bench.output
    assert "tuned configuration from study 't'" in bench.output and "recorded already" in bench.output
    assert "BalancedNTXentLoss(balance=" in bench.output and f"[tuned by cd on 1 fold, {best.runs} val run" in bench.output


def test_tune_on_two_validation_folds_records_a_run_on_each(tmp_path):
    """Issue 29's `pmlbal tune --val-folds 2 --budget 4` on digits: two trials of two fold runs each,
    every fold a recorded run on its own classes and seed, the trial's value their mean; the final
    run trains on the full train split with a default batch's classes a batch."""
    common = ["--dataset", "digits", "--epochs", "1", "--results-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(main, ["tune", "--val-folds", "2", "--budget", "4", "--study", "f", "--metric",
                                       "map_at_r", "--space", "balance=0.5:2", "--space", "batch_size=16:32"] + common)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="f", storage=open_storage(f"sqlite:///{tmp_path}/tuning.db"))
    assert len(study.trials) == 2  # the budget counts training runs: 4 runs = 2 trials of 2 folds
    records = {r["run_id"]: r for r in (json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json"))}
    for t in study.trials:
        folds = [records[i] for i in t.user_attrs["fold_run_ids"]]
        assert [r["config"]["val_fold"] for r in folds] == [0, 1] and {r["config"]["val_folds"] for r in folds} == {2}
        assert [r["seed"] for r in folds] == [0, 1]  # run 0: fold i trains with seed base + i
        assert t.value == pytest.approx(sum(r["final"]["map_at_r"] for r in folds) / 2)
        assert t.user_attrs["fold_spread"] >= 0 and "val_gain" in t.user_attrs
    final = [r for r in records.values() if r["config"]["eval_split"] == "test"]
    # Two trials are the defaults and one unconfirmed point: a point must be re-run to replace the defaults.
    assert len(final) == 1 and final[0]["config"]["val_folds"] == 1
    assert final[0]["config"]["tuned_by"] == "cd on 2 folds; the defaults: nothing beat them"
    batch = final[0]["config"]["batch_size"]
    assert batch // final[0]["config"]["samples_per_class"] == 4  # not the tuning split's 2 classes a batch


def test_tune_epochs_shorten_the_validation_runs_not_the_final_run(tmp_path):
    """`--tune-epochs 1 --epochs 2`: every validation run trains 1 epoch, the study records the final
    length, and the retrained pick trains 2."""
    common = ["--dataset", "digits", "--results-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(main, ["tune", "--tune-epochs", "1", "--epochs", "2", "--val-folds", "1", "--budget",
                                       "2", "--study", "e", "--space", "balance=0.5:2"] + common)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="e", storage=open_storage(f"sqlite:///{tmp_path}/tuning.db"))
    assert study.user_attrs["pmlbal:spec"]["final_epochs"] == 2 and study.user_attrs["pmlbal:spec"]["base"]["epochs"] == 1
    records = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")]
    val = [r for r in records if r["config"]["eval_split"] == "val"]
    final = [r for r in records if r["config"]["eval_split"] == "test"]
    assert len(val) == 2 and {len(r["epochs"]) for r in val} == {1}
    assert len(final) == 1 and final[0]["config"]["epochs"] == 2 and len(final[0]["epochs"]) == 2
    longer = CliRunner().invoke(main, ["tune", "--tune-epochs", "3", "--epochs", "2", "--study", "e2"] + common)
    assert longer.exit_code != 0 and "--tune-epochs 3 is more than the final run's 2 epochs" in longer.output


def test_cli_tune_refuses_bad_options(tmp_path):
    url = f"sqlite:///{tmp_path}/tuning.db"
    for args, word in [(["--loss", "TripletMarginLoss"], "no default search space"),
                       (["--space", "balance=abc"], "NAME=LOW:HIGH"),
                       (["--space", "tau=1:2"], "cannot override"),
                       (["--storage", "results/tuning.db"], "not a URL"),
                       (["--workers", "2", "--storage", "sqlite:///:memory:"], "needs a storage")]:
        bad = CliRunner().invoke(main, ["tune", "--storage", url] + args if "--storage" not in args else ["tune"] + args)
        assert bad.exit_code != 0 and word in bad.output, (args, bad.output)
        assert [line for line in bad.output.splitlines() if line.startswith("Error:")] and "Traceback" not in bad.output


def test_cli_tune_engine_ray_refuses_in_one_line_without_ray_or_with_optuna_only_options(tmp_path, monkeypatch):
    """Runs with or without the extra: `import ray` is made to fail."""
    monkeypatch.setitem(__import__("sys").modules, "ray", None)
    common = ["tune", "--engine", "ray", "--dataset", "digits", "--budget", "1", "--results-dir", str(tmp_path)]
    for args, word in [([], "needs Ray Tune: pip install 'pmlbal[ray]'"),
                       (["--search", "grid"], "--engine ray runs --search cd, tpe, gp, random"),
                       (["--workers", "2"], "--workers is for --engine optuna")]:
        bad = CliRunner().invoke(main, common + args)
        lines = bad.output.strip().splitlines()
        assert bad.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: ") and word in lines[0], bad.output
    assert not (tmp_path / "tuning.db").exists()


def test_a_study_cannot_be_resumed_with_another_search(tmp_path):
    url = f"sqlite:///{tmp_path}/t.db"
    dims = [Dim("balance", "log", 1 / 16, 16), Dim("temperature", "log", 1 / 64, 1.0)]
    base = TrainConfig()
    run_search(analytic(dims), dims, "cd", 3, url, "s", spec=make_spec(base, "BalancedNTXentLoss", dims, "cd", 3))
    with pytest.raises(ValueError, match="another search"):
        run_search(analytic(dims), dims, "tpe", 3, url, "s", spec=make_spec(base, "BalancedNTXentLoss", dims, "tpe", 3))
    more = run_search(analytic(dims), dims, "cd", 6, url, "s", spec=make_spec(base, "BalancedNTXentLoss", dims, "cd", 6))
    assert len(more.trials) == 6  # a larger budget resumes the same search
    with pytest.raises(ValueError, match=r"another seed \(0 then, 1 now\)"):
        run_search(analytic(dims), dims, "cd", 6, url, "s", seed=1,
                   spec=make_spec(base, "BalancedNTXentLoss", dims, "cd", 6, seed=1))


def test_a_version_one_study_is_not_resumed_by_version_two(tmp_path):
    url = f"sqlite:///{tmp_path}/t.db"
    dims = [Dim("balance", "log", 1 / 16, 16)]
    spec = make_spec(TrainConfig(), "BalancedNTXentLoss", dims, "cd", 3)
    old = {k: v for k, v in spec.to_attrs().items() if k not in ("version", "confirm")}  # as version 1 wrote it
    optuna.create_study(study_name="s", storage=open_storage(url), direction="maximize").set_user_attr(
        "pmlbal:spec", old)
    with pytest.raises(ValueError, match="search version \\(absent in the stored study: version 1, 3 now"):
        open_study(open_storage(url), "s", spec)


def test_bench_tuned_falls_back_to_defaults_without_a_study(tmp_path):
    from pmlbal.bench import tuned_config

    notes = []
    cfg = tuned_config(TrainConfig(), "BalancedNTXentLoss", {}, f"sqlite:///{tmp_path}/none.db", notes.append)
    assert cfg.loss_kwargs == {} and cfg.tuned_from is None and "default configuration" in notes[0]
    assert not (tmp_path / "none.db").exists()  # looking did not create a database


def test_worker_and_show_name_a_missing_study(tmp_path):
    url = f"journal:{tmp_path}/j.log"
    worker = CliRunner().invoke(main, ["tune-worker", "--storage", url, "--study", "nope"])
    assert worker.exit_code != 0 and "no study 'nope'" in worker.output and "Traceback" not in worker.output
    shown = CliRunner().invoke(main, ["tune", "--show", "--storage", url, "--study", "nope"])
    assert shown.exit_code != 0 and "no study 'nope'" in shown.output
    foreign = optuna.create_study(study_name="plain", storage=open_storage(url))
    foreign.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    plain = CliRunner().invoke(main, ["tune-worker", "--storage", url, "--study", "plain"])
    assert plain.exit_code != 0 and "not made by `pmlbal tune`" in plain.output


def test_bench_tuned_takes_the_most_recent_study_or_the_one_named(tmp_path):
    from pmlbal.bench import tuned_config

    url = f"sqlite:///{tmp_path}/t.db"
    dims = [Dim("balance", "log", 1 / 16, 16), Dim("temperature", "log", 1 / 64, 1.0)]
    base = TrainConfig()
    for name, search in (("old", "random"), ("new", "cd")):
        run_search(analytic(dims), dims, search, 4, url, name,
                   spec=make_spec(base, "BalancedNTXentLoss", dims, search, 4))
    notes = []
    latest = tuned_config(base, "BalancedNTXentLoss", {}, url, notes.append)
    new = pick(optuna.load_study(study_name="new", storage=url))
    assert latest.tuned_from.endswith("#new") and latest.tuned_runs == new.runs
    assert latest.loss_kwargs["balance"] == new.params["balance"] and "'new'" in notes[0]
    named = tuned_config(base, "BalancedNTXentLoss", {}, url, notes.append, study_name="old")
    assert named.tuned_from.endswith("#old")
    with pytest.raises(ValueError, match="no study 'nope'"):
        tuned_config(base, "BalancedNTXentLoss", {}, url, notes.append, study_name="nope")
    with pytest.raises(ValueError, match="does not tune KCLLoss"):
        tuned_config(base, "KCLLoss", {}, url, notes.append, study_name="old")


def test_supervised_confirm_ends_when_no_run_has_a_value():
    from pmlbal.tune.run import supervise

    dims = [Dim("balance", "log", 1 / 16, 16)]
    study = optuna.create_study(direction="maximize")
    for _ in range(3):  # every sampled run failed: there is nothing to confirm
        study.add_trial(optuna.trial.create_trial(params={"balance": 1.0}, state=optuna.trial.TrialState.FAIL,
                                                  distributions={"balance": optuna.distributions.FloatDistribution(
                                                      1 / 16, 16, log=True)}))
    supervise(study, 4, poll=0.01, log=lambda s: None, dims=dims, confirm=True)  # returns instead of spinning
    assert study.user_attrs["pmlbal:state"] == "done"


def test_show_does_not_create_a_missing_database(tmp_path):
    url = f"sqlite:///{tmp_path}/none/tuning.db"
    shown = CliRunner().invoke(main, ["tune", "--show", "--storage", url, "--study", "s"])
    assert shown.exit_code != 0 and "does not exist" in shown.output and "Traceback" not in shown.output
    assert not (tmp_path / "none").exists()


def test_tune_storage_defaults_to_the_results_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shown = CliRunner().invoke(main, ["tune", "--show", "--results-dir", "elsewhere", "--study", "s"])
    assert shown.exit_code != 0 and "sqlite:///elsewhere/tuning.db does not exist" in shown.output
    assert not (tmp_path / "results").exists()


def test_gp_is_optunas_gaussian_process_with_fitted_noise_and_powers_of_two(tmp_path):
    """`--search gp`: Optuna's GPSampler (noise fitted: runs are noisy) behind the same defaults-first
    machinery; its start-up share scales with the budget; batch sizes stay powers of two."""
    import optuna

    from pmlbal.tune.powers import PowersOfTwo
    from pmlbal.tune.run import make_sampler

    dims = [Dim("balance", "log", 1 / 16, 16), Dim("batch_size", "log2-int", 16, 256)]
    sampler = make_sampler("gp", dims, seed=0, budget=12)
    assert isinstance(sampler, PowersOfTwo) and isinstance(sampler.inner, optuna.samplers.GPSampler)
    assert sampler.inner._n_startup_trials == 4 and not sampler.inner._deterministic
    assert make_sampler("gp", dims, seed=0, budget=60).inner._n_startup_trials == 10

    def objective(trial):
        b = trial.suggest_float("balance", 1 / 16, 16, log=True)
        n = trial.suggest_int("batch_size", 16, 256, log=True)
        return -(math.log2(b) - 1) ** 2 - 0.1 * (math.log2(n) - 6) ** 2

    x0 = {"balance": 1.0, "batch_size": 128}
    study = run_search(objective, dims, "gp", budget=12, storage=f"sqlite:///{tmp_path}/g.db", study_name="g",
                       spec=make_spec(TrainConfig(), "BalancedNTXentLoss", dims, "gp", 12, confirm=True, x0=x0),
                       confirm=True)
    assert len(study.trials) == 12 and study.trials[0].params == x0  # the defaults first
    assert all(t.params["batch_size"] in (16, 32, 64, 128, 256) for t in study.trials)
    assert any(t.user_attrs.get("run", 0) >= 1 for t in study.trials[9:])  # the last quarter confirms


def test_a_final_run_another_tune_is_training_is_waited_for_not_failed(monkeypatch):
    """Fault trial, second round (issue 46, case 23): a second `pmlbal tune` of the same study exited 1 on the
    final run's lock while the first trained it."""
    import pmlbal.tune.run as run_mod
    from pmlbal.records import RunLockedError

    calls, said = [], []

    def train(cfg, reuse):
        calls.append(reuse)
        if len(calls) == 1:
            raise RunLockedError("another process (vm:1) is training this configuration and seed 0")
        return {"run_id": "r1", "final": {}}

    monkeypatch.setattr(run_mod, "train", train)
    monkeypatch.setattr(run_mod, "final_config", lambda study, url, **kw: TrainConfig(epochs=1))
    study = optuna.create_study(direction="maximize")
    record = run_mod.retrain_best(study, "sqlite://", log=said.append, poll=0.01)
    assert record["run_id"] == "r1" and calls == [True, True] and study.user_attrs[run_mod.FINAL] == "r1"
    assert len(said) == 1 and "waiting for its record" in said[0]
