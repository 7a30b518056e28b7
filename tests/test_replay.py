"""benchmarks/replay.py: the replay of searches on a recorded multi-seed lattice (issue 47), on a miniature
lattice whose values encode their seed, so what each replayed run returned can be read back."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def replay():
    spec = importlib.util.spec_from_file_location("bench_replay", ROOT / "benchmarks" / "replay.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def value(b: int, t: int, s: int, seed: int) -> float:
    """A ridge peaking at (1, -3, 6); the thousandths carry the seed index."""
    return round(0.6 - 0.04 * (b - 1) ** 2 - 0.03 * (t + 3) ** 2 - 0.02 * (s - 6) ** 2 + 0.01 * seed + 0.001 * seed, 6)


def write_lattice(path: Path, seeds=(0, 1, 2), holes=()) -> Path:
    rows = ["point,balance,temperature,batch_size,seed,map_at_r,recall@1,run_id,cpu,threads"]
    for b in (-1, 0, 1, 2):
        for t in (-5, -4, -3, -2):
            for s in (5, 6, 7):
                for seed in seeds:
                    if (b, t, s, seed) in holes:
                        continue
                    rows.append(f"b{b}_t{t}_s{s},{2.0**b},{2.0**t},{2**s},{seed},{value(b, t, s, seed)},0.9,r,x,1")
    path.write_text("# test\n" + "\n".join(rows) + "\n")
    return path


def test_a_lattice_short_of_seeds_or_with_holes_is_refused_by_name(replay, tmp_path):
    with pytest.raises(ValueError, match="2 seed indices are recorded at every point, 3 needed"):
        replay.load_lattice(write_lattice(tmp_path / "a.csv", holes={(0, -4, 6, 2)}), 3)
    lattice = replay.load_lattice(write_lattice(tmp_path / "b.csv", holes={(0, -4, 6, 2)}), 2)
    assert lattice.seeds == (0, 1)  # the seed index a point lacks is left out everywhere
    with pytest.raises(ValueError, match="holes"):
        path = write_lattice(tmp_path / "c.csv")
        path.write_text("\n".join(line for line in path.read_text().splitlines() if not line.startswith("b2_t-2_s7")))
        replay.load_lattice(path, 3)


def test_run_k_of_every_point_is_the_same_seed_index_and_the_heldout_run_was_never_drawn(replay, tmp_path):
    lattice = replay.load_lattice(write_lattice(tmp_path / "l.csv"))
    obj = replay.Replay(lattice, search_seed=5)
    seen = {}
    for p in [(0, -4, 6), (2, -2, 5), (0, -4, 6), (-1, -5, 7), (2, -2, 5)]:
        k = obj.count[p]
        got = obj.lattice.runs[p][obj.order[k]]
        obj.count[p] += 1
        seen.setdefault(k, set()).add(round(got * 1000) % 10)  # the seed index, read back from the value
    assert all(len(s) == 1 for s in seen.values()) and seen[0] != seen[1]  # shared per k, differing across k
    held = obj.heldout((0, -4, 6))
    assert round(held * 1000) % 10 == obj.order[2] and obj.order[2] not in {obj.order[0], obj.order[1]}
    assert math.isclose(lattice.truth((1, -3, 6)), lattice.best)
    assert lattice.nearest(1, 0.07, 128) == {"balance_exp": 0, "temperature_exp": -4, "batch_exp": 7}


@pytest.mark.parametrize("method", ["cd", "tpe", "gp", "random", "sobol"])
def test_every_arm_spends_its_budget_from_the_same_start_and_is_scored_by_truth(replay, tmp_path, method):
    lattice = replay.load_lattice(write_lattice(tmp_path / "l.csv"))
    x0 = lattice.nearest(1, 0.07, 64)
    row = replay.search(lattice, method, 8, 3, x0, noise=0.0156)
    b, t, s = (int(v[1:]) for v in row["pick_point"].split("_"))
    assert row["pick_value"] == pytest.approx(round(100 * lattice.truth((b, t, s)), 4))
    assert row["regret"] == pytest.approx(row["best_value"] - row["pick_value"], abs=1e-3) and row["regret"] >= 0
    assert 1 <= row["pick_runs"] <= 8 and row["trials"] == 8


def test_the_summary_pairs_cd_with_each_arm_and_the_docs_table_is_the_csvs(replay, tmp_path):
    lattice = replay.load_lattice(write_lattice(tmp_path / "l.csv"))
    rows = replay.run_replay(lattice, ["cd", "random"], [8], 6, lattice.nearest(1, 0.07, 64), 0.0156)
    out = tmp_path / "replay" / "mini.csv"
    replay.write_rows(rows, out, "python benchmarks/replay.py --test")
    summary = replay.summarise(replay.read_rows(out))
    cd, rnd = summary
    assert (cd["method"], rnd["method"], rnd["searches"]) == ("cd", "random", 6)
    assert cd["ci_low"] <= cd["mean_regret"] <= cd["ci_high"]
    want = sum(float(r["regret"]) for r in rows if r["method"] == "cd") / 6 - \
        sum(float(r["regret"]) for r in rows if r["method"] == "random") / 6
    assert rnd["cd_minus"] == pytest.approx(want, abs=1e-9) and math.isnan(cd["cd_minus"])
    docs = tmp_path / "tuner.md"
    docs.write_text("before\n<!-- replay:mini -->\nstale\n<!-- /replay:mini -->\nafter\n")
    replay.main(["--summary", str(out), "--docs", str(docs), "--figure", str(tmp_path / "f.png")])
    assert replay.docs_table(docs, "mini") == replay.table_markdown(summary)
    assert docs.read_text().startswith("before\n") and docs.read_text().endswith("after\n")
    assert (tmp_path / "f.png").stat().st_size > 0
    with pytest.raises(ValueError, match="no '<!-- replay:other -->'"):
        replay.write_docs(docs, "other", "x")


def test_the_committed_replay_tables_are_the_committed_csvs(replay):
    """Drift: docs/tuner.md's replay tables are generated from results/replay/*.csv."""
    for csv_path in sorted((ROOT / "results" / "replay").glob("*.csv")):
        committed = replay.docs_table(ROOT / "docs" / "tuner.md", csv_path.stem)
        assert committed is not None, f"docs/tuner.md has no replay table for {csv_path.name}"
        assert committed == replay.table_markdown(replay.summarise(replay.read_rows(csv_path))), csv_path.name
