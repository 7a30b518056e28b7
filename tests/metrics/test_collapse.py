"""The collapse verdict: closed-form cases of both signs, and what the boards and the tuner do with it."""

import csv
import io

from pmlbal.metrics.collapse import COLLAPSE_MARGIN, COLLAPSE_RANK, collapse_of, collapse_reason, is_collapsed
from pmlbal.tune.folds import score_folds


def _record(final, initial, split="test", dataset="digits"):
    return {"config": {"dataset": dataset, "eval_split": split}, "final": final, "initial": initial}


def test_a_rank_near_one_collapses_on_any_split():
    assert "effective rank 1.04" in collapse_reason({"effective_rank": 1.04}, None, None)
    assert collapse_reason({"effective_rank": COLLAPSE_RANK}, None, None) is None  # the threshold itself is not
    assert is_collapsed(_record({"effective_rank": 1.2, "map_at_r": 0.5}, {"map_at_r": 0.1}, split="val"))


def test_falling_below_the_untrained_network_by_the_margin_collapses_test_runs_only():
    below = {"effective_rank": 20.0, "map_at_r": 0.28 - COLLAPSE_MARGIN - 0.01}
    verdict = collapse_of(_record(below, {"map_at_r": 0.28}))  # digits leads with MAP@R
    assert verdict["metric"] == "map_at_r" and "more than 10 points below" in verdict["reason"]
    assert verdict["rank_below"] == COLLAPSE_RANK and verdict["margin"] == COLLAPSE_MARGIN
    assert collapse_of(_record({**below, "map_at_r": 0.28 - COLLAPSE_MARGIN + 0.01}, {"map_at_r": 0.28}))["reason"] is None
    # A validation fold of two classes often ends under its untrained network: the rank alone judges it.
    assert collapse_of(_record(below, {"map_at_r": 0.28}, split="val"))["reason"] is None
    # A stored verdict is what counts (the thresholds of its day), else the rule applies now.
    assert not is_collapsed({**_record(below, {"map_at_r": 0.28}), "collapse": {"reason": None}})


def test_a_tuning_trial_with_a_collapsed_fold_says_so():
    ok = {"run_id": "a", "final": {"map_at_r": 0.5, "effective_rank": 20.0}, "initial": {"map_at_r": 0.4},
          "config": {"dataset": "digits", "eval_split": "val"}}
    flat = {**ok, "run_id": "b", "final": {"map_at_r": 0.1, "effective_rank": 1.01}}
    assert "collapsed" not in score_folds([ok, ok], "map_at_r").attrs()
    assert "effective rank 1.01" in score_folds([ok, flat], "map_at_r").attrs()["collapsed"]


def test_a_collapsed_configuration_is_shown_apart_and_never_ranked(tmp_path):
    from pmlbal.leaderboard import fill_board_markers, write_leaderboards
    from pmlbal.records import iter_records, write_record
    from tests.test_leaderboard import fake_record

    write_record(fake_record(r1=0.9), tmp_path)
    for seed in (0, 1):
        flat = fake_record(loss="KCLLoss", seed=seed, r1=0.95, map_at_r=0.9)  # the best numbers, yet collapsed
        flat["final"]["effective_rank"] = 1.1
        write_record(flat, tmp_path)
    write_leaderboards(tmp_path, plots=False)
    board = (tmp_path / "digits.md").read_text()
    ranking, _, apart = board.partition("## Collapsed runs")
    assert "| 1 | BalancedNTXentLoss |" in ranking and "KCLLoss" not in ranking
    assert "| 1 | KCLLoss |" in apart and "2 of 2: effective rank 1.10" in apart
    rows = {r["loss"]: r for r in csv.DictReader(io.StringIO((tmp_path / "digits.csv").read_text()))}
    assert rows["KCLLoss"]["collapsed"] == "2" and rows["BalancedNTXentLoss"]["collapsed"] == "0"
    excerpt = fill_board_markers("<!-- board:digits:top 5 -->\n<!-- /board -->", list(iter_records(tmp_path)),
                                 tmp_path, tmp_path / "README.md")
    assert "KCLLoss" not in excerpt and "BalancedNTXentLoss" in excerpt
