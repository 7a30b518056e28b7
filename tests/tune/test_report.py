"""A study shown to a reader: the metric named in the table and on the plot, batch sizes as
integers, a labelled colour bar and every tuned coordinate on a panel of its own."""

import math

import pytest

from pmlbal.config import TrainConfig
from pmlbal.tune import Dim, make_spec, pick, run_search
from pmlbal.tune import report
from pmlbal.tune.spaces import suggest

DIMS = [Dim("balance", "log", 1 / 16, 16), Dim("temperature", "log", 1 / 64, 1.0),
        Dim("batch_size", "log2-int", 16, 64), Dim("lr", "log", 1e-4, 1e-2)]


def objective(trial):
    v = {d.name: suggest(trial, d) for d in DIMS}
    return 0.5 - 0.01 * ((math.log2(v["balance"]) - 1) ** 2 + (math.log2(v["batch_size"]) - 5) ** 2
                         + (math.log2(v["temperature"]) + 3) ** 2 + (math.log10(v["lr"]) + 3) ** 2)


@pytest.fixture(scope="module")
def study():
    spec = make_spec(TrainConfig(), "BalancedNTXentLoss", DIMS, "cd", 16, metric="map_at_r")
    return run_search(objective, DIMS, "cd", budget=16, storage=None, study_name="s", spec=spec)


def test_show_names_the_metric_column(study):
    text = report.format_trajectory(study)
    head = text.splitlines()[0].split()
    assert head[:2] == ["#", "state"] and "val" in head and "map_at_r" in head
    assert "value" not in head
    assert f"val map_at_r {pick(study).value:.4g}" in text.splitlines()[-1]


def test_plot_integer_batch_ticks_labelled_colour_bar_every_coordinate(study):
    fig = report.trajectory_figure(study)
    plane = next(ax for ax in fig.axes if ax.get_xlabel() == "balance" and ax.get_ylabel() == "batch_size")
    fig.canvas.draw()
    ticks = [t.get_text() for t in plane.get_yticklabels() if t.get_text()]
    assert ticks and all(t.isdigit() for t in ticks) and {"16", "32", "64"} <= set(ticks)
    assert not plane.yaxis.get_minor_locator()()  # no 2^4.5 in between
    colour_bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(colour_bars) == 1 and colour_bars[0].get_ylabel() == "val map_at_r"
    per_coordinate = sorted(ax.get_xlabel() for ax in fig.axes if ax.get_ylabel() == "val map_at_r"
                            and ax.get_xlabel() != "trial" and ax not in colour_bars)
    assert per_coordinate == ["balance", "batch_size", "lr", "temperature"]  # every tuned coordinate
    trials_ax = next(ax for ax in fig.axes if ax.get_xlabel() == "trial")
    assert trials_ax.get_ylabel() == "val map_at_r"
    batch_ax = next(ax for ax in fig.axes if ax.get_xlabel() == "batch_size" and ax.get_ylabel() == "val map_at_r")
    assert all(t.get_text().isdigit() for t in batch_ax.get_xticklabels() if t.get_text())


def test_plot_file_and_spec_key(study, tmp_path):
    from pmlbal.tune.run import SPEC

    assert report.SPEC is SPEC  # one key, defined once (tune/optuna.py), read by the report and the runner
    path = report.plot_trajectory(study, tmp_path / "t.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
