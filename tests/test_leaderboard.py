"""Records and leaderboards: rebuilt identically, bad records skipped by path, atomic unique writes, PNGs."""

import csv
import dataclasses
import io
import json
import multiprocessing as mp

import pytest

from pmlbal.leaderboard import build_rows, write_leaderboards
from pmlbal.records import NUMERICS_VERSION, SCHEMA_VERSION, RecordError, config_key, new_run_id, read_record, write_record


def metrics(r1, map_at_r=None):
    return {"recall@1": r1, "recall@2": r1 + 0.05, "recall@4": r1 + 0.1, "recall@8": r1 + 0.12,
            "map_at_r": r1 / 2 if map_at_r is None else map_at_r, "r_precision": r1 / 1.5}


def fake_record(loss="BalancedNTXentLoss", seed=0, r1=0.8, balance=None, batch=50, map_at_r=None, initial=None,
                backbone="resnet10t", eval_split="test"):
    kwargs = {} if balance is None else {"balance": balance}
    cfg = {"dataset": "digits", "loss": loss, "loss_kwargs": kwargs, "seed": seed, "backbone": backbone,
           "embedding_dim": 64, "batch_size": batch, "epochs": 2, "eval_split": eval_split}
    record = {"schema": SCHEMA_VERSION, "run_id": new_run_id(cfg), "config": cfg, "config_key": config_key(cfg),
              "seed": seed, "command": f"pmlbal train --loss {loss}", "final": metrics(r1, map_at_r),
              "train_time_s": 3.0, "device": "CPU", "numerics": {"version": NUMERICS_VERSION, "threads": 1, "device": "cpu"},
              "steps": [{"loss": 1.0, "pos_term": -1.0, "entropy_term": 2.0}] * 3}
    if initial is not None:
        record["initial"] = metrics(*initial)
    return record


def test_rows_mean_std_and_order(tmp_path):
    for seed, r1 in enumerate([0.8, 0.9]):
        write_record(fake_record(seed=seed, r1=r1), tmp_path)
    write_record(fake_record(loss="NTXentLoss", r1=0.95), tmp_path)
    trial = fake_record(loss="KCLLoss", r1=0.99)  # a tuning trial (val split): not a result
    trial["config"]["eval_split"] = "val"
    write_record(trial, tmp_path)
    boards = write_leaderboards(tmp_path, "digits", expected_seeds=2, plots=False)
    rows = boards["digits"]
    assert [r["loss"] for r in rows] == ["NTXentLoss", "BalancedNTXentLoss"]
    # The sample s.d. (n - 1): 0.8 and 0.9 give 0.0707, not the population's 0.05.
    assert rows[1]["recall@1"][0] == pytest.approx(0.85) and rows[1]["recall@1"][1] == pytest.approx(0.1 / 2**0.5)
    md = (tmp_path / "digits.md").read_text()
    assert "| 85.00 ± 7.07 |" in md and "| 2 |" in md and "sample standard deviation (n − 1)" in md
    assert "| NTXentLoss | 47.50 | 95.00 | 100.00 |" in md and "| 1 † |" in md  # one run: no spread claimed
    assert "marked †" in md
    assert "digits" in (tmp_path / "README.md").read_text()


def test_runs_at_another_thread_count_or_device_form_a_row_of_their_own(tmp_path):
    for seed, r1 in enumerate([0.8, 0.9]):
        write_record(fake_record(seed=seed, r1=r1), tmp_path)
    two = fake_record(seed=2, r1=0.5)  # the same configuration at 2 threads rounds otherwise
    two["numerics"]["threads"] = 2
    write_record(two, tmp_path)
    gpu = fake_record(seed=0, r1=0.7)
    gpu["numerics"] = {"version": NUMERICS_VERSION, "threads": 16, "device": "cuda"}
    gpu["device"] = "NVIDIA H100 80GB HBM3"
    write_record(gpu, tmp_path)
    rows = [r for r in write_leaderboards(tmp_path, "digits", expected_seeds=2, plots=False)["digits"]
            if not r["untrained"]]
    by_r1 = sorted((round(r["recall@1"][0], 4), r["seeds"]) for r in rows)
    assert by_r1 == [(0.5, 1), (0.7, 1), (0.85, 2)]
    assert "| threads |" in (tmp_path / "digits.md").read_text()


def test_untrained_row_from_initial_metrics_one_value_per_seed(tmp_path):
    # Seeds 0 and 1 start from different weights; every loss trained from seed 0 shares its start.
    start = {0: (0.90, 0.20), 1: (0.88, 0.30)}
    for loss, r1, gain in (("NTXentLoss", 0.86, 0.1), ("BalancedNTXentLoss", 0.95, 0.3), ("KCLLoss", 0.80, -0.05)):
        for seed in (0, 1):
            write_record(fake_record(loss=loss, seed=seed, r1=r1, map_at_r=start[seed][1] + gain,
                                     initial=start[seed]), tmp_path)
    # Another backbone is another untrained network; a val-split trial is no result of either.
    write_record(fake_record(loss="NTXentLoss", backbone="resnet18", r1=0.5, map_at_r=0.6, initial=(0.4, 0.05)), tmp_path)
    write_record(fake_record(loss="NTXentLoss", r1=0.5, map_at_r=0.9, initial=(1.0, 0.99), eval_split="val"), tmp_path)
    rows = write_leaderboards(tmp_path, "digits", expected_seeds=2, plots=False)["digits"]
    untrained = {r["backbone"]: r for r in rows if r["untrained"]}
    assert set(untrained) == {"resnet10t", "resnet18"}
    u = untrained["resnet10t"]
    assert u["seeds"] == 2  # two initialisations, not six runs
    # sample s.d. of two seeds' values: |a - b| / sqrt(2)
    assert u["map_at_r"] == pytest.approx((0.25, 0.1 / 2**0.5)) and u["recall@1"] == pytest.approx((0.89, 0.02 / 2**0.5))
    assert u["recall@8"][0] == pytest.approx(0.89 + 0.12)
    assert untrained["resnet18"]["map_at_r"] == pytest.approx((0.05, 0.0))
    # digits leads with MAP@R: the board is sorted by it, so KCL (Recall@1 0.80) falls below the untrained row.
    order = [(r["loss"], r["backbone"]) for r in rows]
    assert order == [("NTXentLoss", "resnet18"), ("BalancedNTXentLoss", "resnet10t"), ("NTXentLoss", "resnet10t"),
                     ("untrained model", "resnet10t"), ("KCLLoss", "resnet10t"), ("untrained model", "resnet18")]
    md = (tmp_path / "digits.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert table[0].startswith("| # | loss | MAP@R | R@1 |")  # the lead metric leads
    assert "| 4 | **untrained model** | **25.00 ± 7.07** | **89.00 ± 1.41** |" in md
    assert "Sorted by MAP@R" in md and "Recall@1 saturates on digits" in md
    assert "untrained model** row is the same network before its first training step" in md
    csv_rows = list(csv.DictReader(io.StringIO((tmp_path / "digits.csv").read_text())))
    assert [r["loss"] for r in csv_rows][3] == "untrained model" and csv_rows[3]["map_at_r_mean"] == "0.250000"
    assert list(csv_rows[0])[1] == "map_at_r_mean"


def test_recall_led_board_has_no_lead_note_and_no_untrained_row_without_initial(tmp_path, monkeypatch):
    from pmlbal import registry

    monkeypatch.setitem(registry._DATASETS, "digits",
                        dataclasses.replace(registry.dataset_spec("digits"), lead_metric="", lead_reason=""))
    write_record(fake_record(loss="NTXentLoss", r1=0.7, map_at_r=0.9), tmp_path)
    write_record(fake_record(loss="KCLLoss", r1=0.8, map_at_r=0.1), tmp_path)
    rows = write_leaderboards(tmp_path, "digits", expected_seeds=1, plots=False)["digits"]
    assert [r["loss"] for r in rows] == ["KCLLoss", "NTXentLoss"]  # by Recall@1
    md = (tmp_path / "digits.md").read_text()
    assert "Sorted by" not in md and "untrained" not in md and "| # | loss | R@1 |" in md


def test_no_dagger_note_when_every_row_has_its_seeds(tmp_path):
    for seed in range(2):
        write_record(fake_record(seed=seed, r1=0.8), tmp_path)
    write_leaderboards(tmp_path, "digits", expected_seeds=2, plots=False)
    md = (tmp_path / "digits.md").read_text()
    assert "†" not in md and "| 80.00 ± 0.00 |" in md


def test_rebuilt_identically(tmp_path):
    for seed in range(3):
        write_record(fake_record(seed=seed, r1=0.7 + 0.01 * seed), tmp_path)
    write_leaderboards(tmp_path, plots=False)
    first = {p.name: p.read_bytes() for p in tmp_path.glob("*.*")}
    write_leaderboards(tmp_path, plots=False)
    assert first == {p.name: p.read_bytes() for p in tmp_path.glob("*.*")}


def test_bad_records_are_reported_by_path_and_skipped(tmp_path):
    write_record(fake_record(), tmp_path)
    runs = tmp_path / "runs"
    (runs / "broken.json").write_text("{not json")
    old = fake_record()
    old["schema"] = 0
    (runs / "old.json").write_text(json.dumps(old))
    missing = fake_record()
    del missing["final"]
    (runs / "missing.json").write_text(json.dumps(missing))
    warnings = []
    boards = write_leaderboards(tmp_path, plots=False, warn=warnings.append)
    assert len(boards["digits"]) == 1
    text = "\n".join(warnings)
    assert "broken.json" in text and "old.json" in text and "schema" in text
    assert "missing.json" in text and "final" in text
    with pytest.raises(RecordError, match="missing field"):
        read_record(runs / "missing.json")


def _writer(args):
    results_dir, seed = args
    return str(write_record(fake_record(seed=seed), results_dir))


def test_concurrent_writers_never_overwrite(tmp_path):
    with mp.get_context("spawn").Pool(4) as pool:
        paths = pool.map(_writer, [(str(tmp_path), 0)] * 16)
    assert len(set(paths)) == 16 and len(list((tmp_path / "runs").glob("*.json"))) == 16
    for p in paths:
        read_record(p)
    assert not list((tmp_path / "runs").glob(".*"))


def _sweep_records(tmp_path):
    for bal in (0.5, 1.0, 2.0):
        for batch in (20, 50):
            write_record(fake_record(balance=bal, batch=batch, r1=0.5 + 0.1 * bal, initial=(0.9, 0.2)), tmp_path)
    # Tuning trials on val never enter a result plot, however good.
    for bal in (0.5, 4.0):
        write_record(fake_record(balance=bal, batch=20, r1=0.99, eval_split="val"), tmp_path)
    write_record(fake_record(loss="NTXentLoss", r1=0.7, initial=(0.9, 0.2)), tmp_path)  # PML: no terms recorded
    records = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")]
    for r in records:
        if r["config"]["loss"] == "NTXentLoss":
            r["steps"] = [{"loss": 1.0}] * 3
    return records


def test_balance_plot_one_line_per_loss_and_batch_from_test_runs_only(tmp_path):
    from pmlbal import plots

    records = _sweep_records(tmp_path)
    series = plots.balance_sweep_series(records, "map_at_r")
    assert set(series) == {("BalancedNTXentLoss", 20), ("BalancedNTXentLoss", 50)}
    assert [p[:2] for p in series[("BalancedNTXentLoss", 20)]] == [
        (0.5, pytest.approx(0.275)), (1.0, pytest.approx(0.3)), (2.0, pytest.approx(0.35))]  # no val point at balance 4
    fig = plots.balance_sweep_figure("digits", records)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["BalancedNTXentLoss, batch 20", "BalancedNTXentLoss, batch 50", "untrained resnet10t"]
    assert list(ax.get_lines()[0].get_ydata()) == pytest.approx([27.5, 30.0, 35.0])
    assert "MAP@R" in ax.get_ylabel() and ax.get_xlabel() == "balance"  # digits' lead metric
    assert [t.get_text() for t in ax.get_legend().get_texts()] == labels
    # One loss and batch size trained two ways: two lines, told apart in the legend.
    for bal in (0.5, 1.0):
        rec = fake_record(balance=bal, batch=20, r1=0.6)
        rec["config"]["epochs"] = 4
        records.append(rec)
    assert sorted(plots.balance_sweep_series(records)) == [
        ("BalancedNTXentLoss", 50), ("BalancedNTXentLoss [epochs=2]", 20), ("BalancedNTXentLoss [epochs=4]", 20)]
    plots.plot_balance_sweep(tmp_path / "bal.png", "digits", records)
    assert (tmp_path / "bal.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plots.plot_balance_sweep(tmp_path / "bal.png", "digits", records[:1]) == []
    assert not (tmp_path / "bal.png").exists()  # nothing to show: no stale plot left behind


def test_balance_plot_pools_seeds_of_one_configuration_written_by_older_and_newer_code(tmp_path):
    from pmlbal import plots

    records = []
    for seed, value in ((0, 0.30), (1, 0.34)):
        for bal in (1.0, 2.0):
            rec = fake_record(balance=bal, batch=32, r1=0.9, map_at_r=value + bal / 100)
            rec["seed"] = rec["config"]["seed"] = seed
            if seed == 1:  # newer code writes fields the older record (seed 0) lacks, at their defaults
                rec["config"].update(pooling="avg", optimizer="adamw", cache_mode="square", eval_every=0)
            records.append(rec)
    series = plots.balance_sweep_series(records, "map_at_r")
    assert list(series) == [("BalancedNTXentLoss", 32)]
    (b1, m1, s1, n1), (b2, m2, s2, n2) = series[("BalancedNTXentLoss", 32)]
    assert (b1, n1, b2, n2) == (1.0, 2, 2.0, 2)
    assert (m1, s1) == (pytest.approx(0.33), pytest.approx(0.04 / 2**0.5))  # mean and sample s.d. of 0.31, 0.35
    ax = plots.balance_sweep_figure("digits", records).axes[0]
    assert len(ax.collections) == 1 and "2 seeds" in ax.get_title()  # the spread is drawn


def test_recall_bars_span_the_data_and_keep_the_legend_off_the_bars(tmp_path):
    from pmlbal import plots

    records = _sweep_records(tmp_path)
    rows = build_rows(records, "digits")
    fig = plots.recall_bars_figure("digits", rows)
    lead, ax = fig.axes  # digits leads with MAP@R: its own panel, on an axis from 0
    assert lead.get_ylabel() == "MAP@R (%)" and lead.get_ylim()[0] == 0
    assert len([p for p in lead.patches if p.get_hatch() == plots.HATCH_UNTRAINED]) == 1
    low, high = ax.get_ylim()
    assert f"axis from {low:.0f} %, not 0" in ax.get_ylabel()
    bottoms = [100 * (r["recall@1"][0] - r["recall@1"][1]) for r in rows]
    assert 0 < low <= min(bottoms) and high <= 100
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["R@1", "R@2", "R@4", "R@8"]
    fig.canvas.draw()
    legend_box = ax.get_legend().get_window_extent()
    assert legend_box.x0 >= ax.get_window_extent().x1  # right of the axes, over no bar
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == 4  # the untrained row, one bar per K
    assert [t.get_text() for t in ax.get_xticklabels()].count("untrained model") == 1
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert len(set(ticks)) == len(ticks) and "BalancedNTXentLoss(balance=0.5) [batch 20]" in ticks  # rows told apart
    assert plots.plot_recall_bars(tmp_path / "bars.png", "digits", rows) == ["R@1", "R@2", "R@4", "R@8"]
    assert (tmp_path / "bars.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_terms_plot_labels_one_legend_and_names_losses_without_terms(tmp_path):
    from pmlbal import plots

    records = _sweep_records(tmp_path)
    rows = build_rows(records, "digits")
    fig = plots.loss_terms_figure("digits", rows, records)
    for ax in fig.axes:
        assert ax.get_xlabel() == "training step" and ax.get_ylabel() and ax.get_legend() is None
        assert len(ax.get_lines()) == 6  # the six balanced rows; NTXentLoss has no terms to draw
    assert len(fig.legends) == 1 and len(fig.legends[0].get_texts()) == 6
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(set(legend)) == 6  # balance x batch: six runs, six names
    assert len({line.get_color() for line in fig.axes[0].get_lines()}) == 6
    notes = [t.get_text() for t in fig.texts]
    assert len(notes) == 1 and "No recorded terms" in notes[0] and "NTXentLoss" in notes[0]
    assert "untrained" not in notes[0]
    assert len(plots.plot_loss_terms(tmp_path / "terms.png", "digits", rows, records)) == 6


def test_best_epoch_is_shown_marked_beside_the_final_and_the_protocol_named(tmp_path):
    plain = fake_record(loss="NTXentLoss", r1=0.9)
    write_record(plain, tmp_path)
    for seed, (mid, last) in enumerate([(0.86, 0.8), (0.84, 0.82)]):
        r = fake_record(seed=seed, r1=last)
        r["config"]["protocol"] = "roth"
        r["config_key"] = config_key(r["config"])
        # evaluated every epoch (--eval-every 1); no stored "best": the board finds it in the epochs
        r["epochs"] = [{"epoch": 1, "metrics": {"recall@1": 0.5}}, {"epoch": 2, "metrics": {"recall@1": mid}},
                       {"epoch": 3, "metrics": r["final"]}]
        write_record(r, tmp_path)
    rows = write_leaderboards(tmp_path, "digits", plots=False)["digits"]
    md = (tmp_path / "digits.md").read_text()
    assert "BalancedNTXentLoss [protocol roth]" in md and "best epoch" in md and "optimistic" in md
    row = next(r for r in rows if "roth" in r["loss"])
    assert row["recall@1"][0] == pytest.approx(0.81)  # the final epoch stays the headline
    assert row["best"][0] == pytest.approx(0.85) and row["best"][2] == [2, 2]
    assert "| 85.00 ± 1.41 (epoch 2, 2) |" in md and "| – |" in md  # the plain row has no per-epoch metrics
    csv_text = (tmp_path / "digits.csv").read_text()
    assert "best_recall@1_mean" in csv_text and "0.850000" in csv_text


def test_boards_without_per_epoch_metrics_are_unchanged(tmp_path):
    write_record(fake_record(), tmp_path)
    write_leaderboards(tmp_path, "digits", plots=False)
    assert "best" not in (tmp_path / "digits.md").read_text() and "best" not in (tmp_path / "digits.csv").read_text()


@pytest.mark.parametrize("field, value", [("pretrained", "timm"), ("pooling", "max"), ("head_init", "kaiming"),
                                          ("eval_on", "backbone")])
def test_the_untrained_row_is_kept_apart_by_what_fixes_the_untrained_network(field, value):
    from pmlbal.leaderboard import untrained_rows

    plain = fake_record(initial=(0.9, 0.2))
    other = fake_record(loss="NTXentLoss", initial=(0.5, 0.1))
    other["config"][field] = value
    rows = untrained_rows([plain, other], "digits")
    assert len(rows) == 2 and len({r["config_key"] for r in rows}) == 2
    # a field an older record lacks holds its default: the same group as one that writes it
    same = fake_record(loss="KCLLoss", initial=(0.9, 0.2))
    same["config"].update(pooling="avg", head_init="default", eval_on="head")
    assert len(untrained_rows([plain, same], "digits")) == 1


def test_board_markers_are_filled_from_the_records_and_refilled_when_a_record_changes(tmp_path):
    from pmlbal.leaderboard import fill_board_markers, write_board_markers

    for seed, r1 in enumerate([0.8, 0.9]):
        write_record(fake_record(seed=seed, r1=r1), tmp_path)
    write_record(fake_record(loss="NTXentLoss", r1=0.95), tmp_path)
    doc = tmp_path / "README.md"
    doc.write_text("intro\n<!-- board:digits:top 1 -->\nhand-copied, stale\n<!-- /board -->\nafter\n")
    assert write_board_markers([doc], tmp_path) == [doc]
    text = doc.read_text()
    assert text.startswith("intro\n<!-- board:digits:top 1 -->\n| # | loss |") and text.endswith("<!-- /board -->\nafter\n")
    assert "| 1 | NTXentLoss |" in text and "BalancedNTXentLoss" not in text  # the top row only
    assert "The first 1 of 2 rows of [`digits.md`](digits.md)" in text and "stale" not in text
    assert write_board_markers([doc], tmp_path) == []  # a second pass changes nothing
    write_record(fake_record(loss="NTXentLoss", seed=1, r1=0.55), tmp_path)  # a new record moves the row
    assert write_board_markers([doc], tmp_path) == [doc] and "| 1 | BalancedNTXentLoss |" in doc.read_text()
    with pytest.raises(ValueError, match="board:cars marker, but no cars test-split records"):
        fill_board_markers("<!-- board:cars:top 3 -->\n<!-- /board -->", [], tmp_path, doc)


def test_a_non_default_sampler_is_named_in_the_row_label():
    from pmlbal.board_rows import loss_label

    base = {"loss": "BalancedNTXentLoss", "loss_kwargs": {"balance": 2.0}}
    assert loss_label({**base, "sampler": "m-per-class"}) == "BalancedNTXentLoss(balance=2.0)"
    assert loss_label({**base, "sampler": "osgd"}) == "BalancedNTXentLoss(balance=2.0) [sampler osgd]"
    assert loss_label({**base, "sampler": "spectral", "resample_every": 2}) == (
        "BalancedNTXentLoss(balance=2.0) [sampler spectral, every 2 epochs]")


def test_labels_round_long_floats_to_four_significant_digits_and_the_csv_keeps_them_exact(tmp_path):
    from pmlbal.board_rows import loss_label

    cfg = {"loss": "BalancedNTXentLoss", "loss_kwargs": {"balance": 6.8831488149573685, "temperature": 0.4219158948686158}}
    assert loss_label(cfg) == "BalancedNTXentLoss(balance=6.883, temperature=0.4219)"
    assert loss_label(cfg, digits=None) == "BalancedNTXentLoss(balance=6.8831488149573685, temperature=0.4219158948686158)"
    # Short values are shown as written: the labels of untuned rows do not change.
    assert loss_label({"loss": "X", "loss_kwargs": {"balance": 2.0, "t": 0.0625, "agg": "mean", "n": 64}}) == \
        "X(agg=mean, balance=2.0, n=64, t=0.0625)"
    record = fake_record(balance=6.8831488149573685)
    record["command"] = "pmlbal train --loss BalancedNTXentLoss --loss-arg balance=6.8831488149573685"
    write_record(record, tmp_path)
    write_leaderboards(tmp_path, plots=False)
    board = (tmp_path / "digits.md").read_text()
    assert "| BalancedNTXentLoss(balance=6.883) |" in board and "balance=6.8831488149573685 --seed S`" in board
    row = next(csv.DictReader(io.StringIO((tmp_path / "digits.csv").read_text())))
    assert row["loss"] == "BalancedNTXentLoss(balance=6.8831488149573685)"


def test_a_row_whose_first_seed_is_not_zero_names_its_seed_once(tmp_path):
    for seed in (1, 2):
        record = fake_record(seed=seed)
        record["command"] = f"pmlbal train --dataset digits --loss BalancedNTXentLoss --seed {seed} --batch-size 50"
        write_record(record, tmp_path)
    write_leaderboards(tmp_path, plots=False)
    board = (tmp_path / "digits.md").read_text()
    assert "`pmlbal train --dataset digits --loss BalancedNTXentLoss --batch-size 50 --seed S`" in board
    assert "--seed 1" not in board


def test_a_record_with_a_wrong_typed_field_is_skipped_once_by_name_and_the_boards_are_written(tmp_path):
    from click.testing import CliRunner

    from pmlbal.cli import main

    write_record(fake_record(), tmp_path)
    bad = {"string.json": {"map_at_r": "0.99", "recall@1": 0.5}, "null.json": None}
    for name, final in bad.items():
        record = fake_record(seed=5)
        record["final"] = final
        (tmp_path / "runs" / name).write_text(json.dumps(record))
    seedless = fake_record(seed=6)
    seedless["seed"] = "6"
    (tmp_path / "runs" / "seed.json").write_text(json.dumps(seedless))
    # The fault trial's second round (issue 46): a wrong-typed collapse verdict crashed the board; a
    # wrong-typed configuration value and a NaN metric were boarded as they were.
    for name, change in (("collapse.json", {"collapse": "yes"}), ("epochs.json", {"epochs_cfg": "two"}),
                         ("nan.json", {"nan": True})):
        record = fake_record(seed=7)
        if "collapse" in change:
            record["collapse"] = change["collapse"]
        if "epochs_cfg" in change:
            record["config"]["epochs"] = "two"
        if "nan" in change:
            record["final"]["recall@1"] = float("nan")
        (tmp_path / "runs" / name).write_text(json.dumps(record))
    out = CliRunner().invoke(main, ["leaderboard", "--results-dir", str(tmp_path), "--no-plots"])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "digits.md").is_file() and "| two |" not in (tmp_path / "digits.md").read_text()
    for name, what in (("string.json", "final.map_at_r must be a number"), ("null.json", "final must be a mapping"),
                       ("seed.json", "seed must be an integer"), ("collapse.json", "collapse must be a mapping"),
                       ("epochs.json", "config.epochs must be an integer or null"),
                       ("nan.json", "final.recall@1 is NaN")):
        lines = [line for line in out.output.splitlines() if name in line]
        assert len(lines) == 1 and what in lines[0], out.output  # named once, with the field


def test_recall_bars_mark_the_raw_pixels_apart_and_give_a_single_run_no_error_bar(tmp_path):
    import math

    from pmlbal import plots

    for seed, r1 in enumerate([0.8, 0.9]):
        record = fake_record(seed=seed, r1=r1, initial=(0.7,))
        record["pixels"], record["config"]["cache_size"] = metrics(0.95), 32
        write_record(record, tmp_path)
    kcl = fake_record(loss="KCLLoss", r1=0.85, initial=(0.7,))  # one seed
    kcl["config"]["cache_size"] = 32
    write_record(kcl, tmp_path)
    from pmlbal.records import iter_records

    rows = build_rows(list(iter_records(tmp_path)), "digits")
    names = [r["loss"] for r in rows]
    fig = plots.recall_bars_figure("digits", rows)
    ax = fig.axes[1]
    assert len([p for p in ax.patches if p.get_hatch() == plots.HATCH_PIXELS]) == 4  # one bar per K
    assert len([p for p in ax.patches if p.get_hatch() == plots.HATCH_UNTRAINED]) == 4
    single = names.index("KCLLoss")
    containers = [c for c in ax.containers if hasattr(c, "errorbar")]  # a BarContainer per metric
    assert len(containers) == 4
    for container in containers:
        segments = container.errorbar.lines[2][0].get_segments()
        assert all(math.isnan(v) for v in segments[single].ravel())  # one run: no spread drawn
        two = names.index("BalancedNTXentLoss")
        assert not any(math.isnan(v) for v in segments[two].ravel())


def test_the_board_summary_says_what_the_board_shows_and_what_to_run_next(tmp_path):
    from pmlbal.leaderboard import board_summary
    from pmlbal.records import iter_records

    for seed in (0, 1):
        record = fake_record(seed=seed, r1=0.9, map_at_r=0.40, initial=(0.8, 0.30))
        record["pixels"], record["config"]["cache_size"] = metrics(0.99, map_at_r=0.60), 32
        write_record(record, tmp_path)
    rows = build_rows(list(iter_records(tmp_path)), "digits")
    text = "\n".join(board_summary(rows, "digits", "my-results"))
    assert "best trained row, BalancedNTXentLoss, reaches 40.00 % MAP@R" in text
    assert "untrained network 30.00 %" in text and "raw pixels 60.00 %" in text
    assert "raw pixels beat every trained loss" in text
    assert "pmlbal bench --dataset cjk-glyphs --results-dir my-results" in text
    for r in rows:  # pixels below the trained rows: the gain over the untrained network instead
        if r.get("pixels"):
            r["map_at_r"] = (0.2, 0.0)
    text = "\n".join(board_summary(rows, "digits", "my-results"))
    assert "Training adds +10.00 points of MAP@R" in text and "cjk-glyphs" not in text
