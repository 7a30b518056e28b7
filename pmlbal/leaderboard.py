"""Leaderboards from run records: <dataset>.md / .csv per data set and an index README.md.

Rows are sorted by the data set's lead metric (declared in `pmlbal.registry`), which is also the
first metric column; an untrained-model row (the records' `initial` metrics) shows what training
added.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable

from .board_rows import (METRIC_LABELS, PIXELS, UNTRAINED, UNTRAINED_FIELDS, UNTRAINED_KEYS,  # noqa: F401
                         _sort_value, board_metrics, build_rows, loss_label, metric_label, pixel_rows, untrained_rows)
from .cpu import summary
from .metrics.collapse import COLLAPSE_MARGIN, COLLAPSE_RANK
from .records import NUMERICS_VERSION, atomic_write_text, iter_records
from .registry import dataset_spec



def _header(rows: list[dict[str, Any]], dataset: str, expected_seeds: int) -> list[str]:
    spec = dataset_spec(dataset)
    devices = sorted({r["device"] for r in rows if not r["untrained"]})
    splits = sorted({r["eval_split"] for r in rows})
    text = [
        f"Protocol: zero-shot retrieval, trained on the train classes, evaluated on the `{'/'.join(splits)}` split "
        f"(classes never seen in training); exact search; values in %, mean ± sample standard deviation (n − 1) over seeds. "
        "Runs of one row share their configuration, device kind and CPU thread count. "
        f"Hardware: {'; '.join(devices)}. "
        + (f"Rows with fewer than {expected_seeds} seeds are marked †; a single run shows no ±. "
           if any(r["seeds"] < expected_seeds for r in rows if not r.get("pixels")) else "")
        + "Every row comes from the run records in `runs/`; rebuild with `pmlbal leaderboard`. "
        + _threads_note(rows) + _cpus_note(rows)
        + (f" Metrics are the final epoch's; *best epoch* is the highest test R@{spec.ks[0]} among the "
           "epochs evaluated (`--eval-every`), picked by the run's lead metric, with its epoch per seed: the number "
           "papers that report their best epoch give, chosen on test and so optimistic."
           if any("best" in r for r in rows) else ""),
    ]
    if any("effective_rank" in r for r in rows):
        text.append("*eff. rank* is the effective rank of a run's test embeddings (Roy & Vetterli: exp of the entropy "
                    "of their normalised singular values, `pmlbal.metrics.effective_rank`; at most the embedding size, "
                    "1 under total dimensional collapse), mean ± sample s.d. over seeds.")
    if any(r.get("stale") for r in rows):
        text.append(f"Rows marked ‡ come from records of an earlier numerics version than the current code's "
                    f"({NUMERICS_VERSION}, `pmlbal.records.NUMERICS_VERSION`): this code does not compute them; "
                    "their commands re-run them (`pmlbal bench` and `pmlbal train` replace the old records).")
    untrained = [r for r in rows if r["untrained"] and not r.get("pixels")]
    if any(r.get("pixels") for r in rows):
        text.append(f"The **{PIXELS}** row searches the evaluation images themselves (each image's pixels as one "
                    "L2-normalised vector, no network): the floor a learned embedding has to clear.")
    if untrained:
        text.append(f"The **{UNTRAINED}** row is the same network before its first training step (the `initial` "
                    f"metrics of the records, one value per seed): a row below it on {metric_label(spec.lead_metric)} "
                    f"made the embedding worse.")
    if spec.lead_metric != f"recall@{spec.ks[0]}":
        why = f"Sorted by {metric_label(spec.lead_metric)}, the first column. {spec.lead_reason}"
        if len(untrained) == 1:
            u = untrained[0]
            why += (f" Here the untrained model has {100 * u[f'recall@{spec.ks[0]}'][0]:.2f} % "
                    f"{metric_label(f'recall@{spec.ks[0]}')} and {100 * u[spec.lead_metric][0]:.2f} % "
                    f"{metric_label(spec.lead_metric)}.")
        text.append(why)
    return [p for t in text for p in (t, "")]


def _threads_note(rows: list[dict[str, Any]]) -> str:
    """The CPU thread count of the runs, which decides their rounding: one sentence if all share it
    (the table then has no thread column), else a pointer to the column."""
    counts = {t for r in rows if not r.get("pixels") for t in r.get("threads", ())}
    if not counts:
        return ""
    if len(counts) == 1:
        n = counts.pop()
        return f"Every CPU run used {n} thread{'s' if n != 1 else ''} (`torch.get_num_threads()`)."
    return "CPU runs used the thread counts in the *threads* column (`torch.get_num_threads()`)."


def cpu_letters(rows: list[dict[str, Any]]) -> dict[str | None, str]:
    """A letter per CPU fingerprint the rows' runs came from, in order of first appearance; '?' for
    records that predate fingerprints."""
    letters: dict[str | None, str] = {}
    for r in rows:
        for fid in r.get("cpus", {}):
            if fid not in letters:
                letters[fid] = "?" if fid is None else "abcdefghijklmnopqrstuvwxyz"[sum(k is not None for k in letters)]
    return letters


def _cpus_note(rows: list[dict[str, Any]]) -> str:
    """Which CPUs computed the rows (a CPU model rounds differently from another from the first step
    on, so a run re-made elsewhere lands like another seed): one sentence, and a *cpu* column when they differ."""
    letters = cpu_letters(rows)
    if not letters:
        return ""
    fps = {fid: fp for r in rows for fid, fp in r.get("cpus", {}).items()}
    names = {fid: summary(fps[fid]) if fid else "not recorded (records written before CPU fingerprints, 2026-12-07)"
             for fid in letters}
    if len(letters) == 1:
        return f" CPU: {next(iter(names.values()))}."
    return (" CPU runs were computed on the CPUs of the *cpu* column: "
            + "; ".join(f"[{letters[fid]}] {name}" for fid, name in names.items()) + ".")


def _mixed_threads(rows: list[dict[str, Any]]) -> bool:
    return len({t for r in rows if not r.get("pixels") for t in r.get("threads", ())}) > 1


def render_markdown(rows: list[dict[str, Any]], dataset: str, expected_seeds: int) -> str:
    ranked, collapsed, letters = ranked_rows(rows), [r for r in rows if r.get("collapsed")], cpu_letters(rows)
    lines = [f"# {dataset} leaderboard", "", *_header(rows, dataset, expected_seeds),
             *table_lines(ranked, dataset, expected_seeds, letters)]
    if collapsed:
        lines += ["", "## Collapsed runs", "",
                  f"Configurations with a collapsed run (`pmlbal.metrics.collapse`: test embeddings of effective rank "
                  f"below {COLLAPSE_RANK}, or the lead metric more than {100 * COLLAPSE_MARGIN:.0f} points below the "
                  "untrained network's; each record states its verdict under `collapse`): failures, not results, so "
                  "off the ranking above. *collapsed* counts the row's collapsed runs and gives the first one's reason.",
                  "", *table_lines(collapsed, dataset, expected_seeds, letters)]
    return "\n".join(lines) + "\n"


def board_summary(rows: list[dict[str, Any]], dataset: str, results_dir: str | Path) -> list[str]:
    """What a board shows, in two or three sentences a first-time reader can act on: the best trained
    row against the untrained network and the raw pixels on the lead metric, and what to run next."""
    lead = dataset_spec(dataset).lead_metric
    name = metric_label(lead)
    trained = [r for r in ranked_rows(rows) if not r["untrained"]]
    pixels = next((r for r in rows if r.get("pixels")), None)
    untrained = next((r for r in rows if r["untrained"] and not r.get("pixels")), None)
    if not trained:
        return []
    best = max(trained, key=lambda r: _sort_value(r[lead][0]))
    pct = lambda r: f"{100 * r[lead][0]:.2f} %"  # noqa: E731
    lines = [f"What this board shows: the best trained row, {best['loss']}, reaches {pct(best)} {name}"
             + (f"; the untrained network {pct(untrained)}" if untrained else "")
             + (f"; raw pixels {pct(pixels)}" if pixels else "") + "."]
    if pixels and pixels[lead][0] >= best[lead][0]:
        lines.append(f"On {dataset} raw pixels beat every trained loss: its test images are easy to tell apart by "
                     "their pixels, so this board ranks the losses against each other but cannot show what "
                     "training adds.")
        if dataset != "cjk-glyphs":
            lines.append("To see training matter (an untrained network near chance, pixels far below the trained "
                         f"losses), run: pmlbal bench --dataset cjk-glyphs --results-dir {results_dir} "
                         "(glyphs rendered from Debian's CJK fonts; about 2.5 min a run on one core).")
    elif untrained:
        gain = 100 * (best[lead][0] - untrained[lead][0])
        lines.append(f"Training adds {gain:+.2f} points of {name} over the untrained network.")
    lines.append(f"The whole board, with its plots: {Path(results_dir) / f'{dataset}.md'}; to tune a loss on "
                 f"validation folds: pmlbal tune --dataset {dataset} --loss NAME --results-dir {results_dir}.")
    return lines


def ranked_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows a board ranks: every row but those with a collapsed run."""
    return [r for r in rows if not r.get("collapsed")]


def table_lines(rows: list[dict[str, Any]], dataset: str, expected_seeds: int,
                letters: dict[str | None, str] | None = None) -> list[str]:
    """The board's table: a header line, the separator, one line per row (numbered from 1)."""
    metrics = board_metrics(dataset)
    best_col = any("best" in r for r in rows)
    rank_col = any("effective_rank" in r for r in rows)
    threads_col = _mixed_threads(rows)
    letters = cpu_letters(rows) if letters is None else letters
    cpu_col = len(letters) > 1
    collapsed_col = any(r.get("collapsed") for r in rows)
    lines = ["| # | loss | " + " | ".join(metric_label(m) for m in metrics) + (" | eff. rank" if rank_col else "")
             + (" | collapsed" if collapsed_col else "")
             + (" | best epoch" if best_col else "")
             + " | seeds" + (" | threads" if threads_col else "") + (" | cpu" if cpu_col else "")
             + " | backbone | dim | batch | epochs | train s | command |",
             "|---|---|" + "---|" * len(metrics) + ("---|" if rank_col else "") + ("---|" if collapsed_col else "")
             + ("---|" if best_col else "") + ("---|" if threads_col else "")
             + ("---|" if cpu_col else "") + "---|---|---|---|---|---|---|"]
    for i, row in enumerate(rows, 1):
        # One run has no spread to report: "± 0.00" would claim one.
        cells = [f"{100 * row[m][0]:.2f}" + (f" ± {100 * row[m][1]:.2f}" if row["seeds"] > 1 else "") for m in metrics]
        if rank_col:
            rank = row.get("effective_rank")
            cells.append("–" if rank is None else f"{rank[0]:.1f}" + (f" ± {rank[1]:.1f}" if row["seeds"] > 1 else ""))
        if collapsed_col:
            n, why = row.get("collapsed") or (0, "")
            cells.append(f"{n} of {row['seeds']}: {why}" if n else "–")
        if best_col:
            b = row.get("best")
            cells.append("–" if b is None else f"{100 * b[0]:.2f}" + (f" ± {100 * b[1]:.2f}" if len(b[2]) > 1 else "")
                         + f" (epoch {', '.join(map(str, b[2]))})")
        mark = "" if row["seeds"] >= expected_seeds else " †"
        label = row["loss"] + (" ‡" if row.get("stale") else "")
        seeds = (f"{row['seeds']}{mark}" + (f" | {', '.join(map(str, row['threads'])) or '–'}" if threads_col else "")
                 + (f" | {', '.join(sorted(letters[f] for f in row.get('cpus', {}))) or '–'}" if cpu_col else ""))
        if row.get("pixels"):
            lines.append(f"| {i} | **{label}** | " + " | ".join(f"**{c}**" for c in cells)
                         + " | –" * (1 + threads_col + cpu_col)
                         + f" | – | {row['embedding_dim']} | – | 0 | 0 | (no network: `pixels` in the records) |")
            continue
        if row["untrained"]:
            lines.append(f"| {i} | **{label}** | " + " | ".join(f"**{c}**" for c in cells)
                         + f" | {seeds} | {row['backbone']} | {row['embedding_dim']} | – | 0 | 0 "
                         "| (before training: `initial` in the records) |")
            continue
        lines.append(
            f"| {i} | {label} | " + " | ".join(cells)
            + f" | {seeds} | {row['backbone']} | {row['embedding_dim']} | {row['batch_size']}"
            f" | {row['epochs']} | {row['train_time_s']:.0f} | `{row['command']} --seed S` |"
        )
    return lines


def render_csv(rows: list[dict[str, Any]], dataset: str) -> str:
    metrics = board_metrics(dataset)
    best_col = any("best" in r for r in rows)
    k = dataset_spec(dataset).ks[0]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["loss", *[f"{m}_{s}" for m in metrics for s in ("mean", "std")], "seeds", "backbone",
                "embedding_dim", "batch_size", "epochs", "train_time_s", "config_key", "command", "threads", "cpus", "stale", "collapsed"]
               + ([f"best_recall@{k}_mean", f"best_recall@{k}_std", "best_epochs"] if best_col else []))
    for row in rows:
        b = row.get("best")
        w.writerow([row.get("loss_exact", row["loss"]), *[f"{row[m][i]:.6f}" for m in metrics for i in (0, 1)], row["seeds"], row["backbone"],
                    row["embedding_dim"], "" if row["batch_size"] is None else row["batch_size"], row["epochs"],
                    f"{row['train_time_s']:.1f}", row["config_key"], row["command"],
                    " ".join(map(str, row.get("threads", ()))), " ".join(f or "?" for f in row.get("cpus", {})),
                    int(bool(row.get("stale"))), (row.get("collapsed") or (0,))[0]]
                   + ([] if not best_col else ["", "", ""] if b is None
                      else [f"{b[0]:.6f}", f"{b[1]:.6f}", " ".join(map(str, b[2]))]))
    return buf.getvalue()


def write_leaderboards(results_dir: str | Path = "results", dataset: str | None = None, expected_seeds: int | None = None,
                       plots: bool = True, warn: Callable[[str], None] = print) -> dict[str, list[dict]]:
    """Write DIR/<dataset>.md/.csv (+ PNG plots) for each data set with records, and DIR/README.md."""
    results_dir = Path(results_dir)
    records = list(iter_records(results_dir, on_error=lambda msg: warn(f"skipped {msg}")))
    datasets = sorted({r["config"]["dataset"] for r in records}) if dataset is None else [dataset]
    boards = {}
    for ds in datasets:
        rows = build_rows(records, ds)
        if not rows:
            continue
        n = expected_seeds or max(r["seeds"] for r in rows)
        atomic_write_text(results_dir / f"{ds}.md", render_markdown(rows, ds, n))
        atomic_write_text(results_dir / f"{ds}.csv", render_csv(rows, ds))
        if plots:
            from .plots import plot_all

            plot_all(results_dir, ds, rows, [r for r in records if r["config"]["dataset"] == ds])
        boards[ds] = rows
    _write_index(results_dir)
    return boards


def _write_index(results_dir: Path) -> None:
    lines = ["# Leaderboards", "", "Built by `pmlbal leaderboard` from the run records in `runs/`.", ""]
    for md in sorted(results_dir.glob("*.md")):
        if md.name == "README.md":
            continue
        pngs = sorted(p.name for p in results_dir.glob(f"{md.stem}_*.png"))
        lines.append(f"- [{md.stem}]({md.name}) ([csv]({md.stem}.csv))" + "".join(f", [{p}]({p})" for p in pngs))
    atomic_write_text(results_dir / "README.md", "\n".join(lines) + "\n")


#: A generated excerpt of a board in a documentation file: the first N rows of DATASET's board.
BOARD_MARKER = re.compile(r"<!-- board:(?P<dataset>[a-z0-9-]+):top (?P<n>\d+) -->\n.*?<!-- /board -->", re.S)


def fill_board_markers(text: str, records: list[dict[str, Any]], results_dir: str | Path, doc: str | Path) -> str:
    """`text` (the file `doc`) with every ``<!-- board:DATASET:top N -->`` ... ``<!-- /board -->``
    block replaced by the first N rows of DATASET's board built from `records`, and a line naming
    the board file; so a table in a README is written by the code, never copied by hand."""
    results_dir, doc = Path(results_dir), Path(doc)

    def excerpt(m: re.Match) -> str:
        ds, n = m["dataset"], int(m["n"])
        every = build_rows(records, ds)
        rows = ranked_rows(every)
        if not rows:
            raise ValueError(f"{doc}: a board:{ds} marker, but no {ds} test-split records under {results_dir}")
        expected, letters = max(r["seeds"] for r in every), cpu_letters(every)
        link = Path(os.path.relpath(results_dir / f"{ds}.md", doc.parent)).as_posix()
        note = (f"The first {min(n, len(rows))} of {len(rows)} rows of [`{link}`]({link}), written there and here by "
                f"`pmlbal leaderboard --docs {doc.name}` from the run records: values in %, mean ± sample s.d. over seeds"
                + (f", † fewer than {expected} seeds" if any(r["seeds"] < expected for r in rows[:n] if not r.get("pixels"))
                   else "")
                + ("; the *cpu* letters are the board's" if len(letters) > 1 else "") + ".")
        return "\n".join([f"<!-- board:{ds}:top {n} -->", *table_lines(rows[:n], ds, expected, letters), "", note,
                          "<!-- /board -->"])

    return BOARD_MARKER.sub(excerpt, text)


def write_board_markers(paths: Iterable[str | Path], results_dir: str | Path = "results",
                        warn: Callable[[str], None] = print) -> list[Path]:
    """Fill the board markers of each file in `paths` (atomically); the files that changed."""
    paths = list(paths)
    if not paths:  # nothing to fill: no second pass over the records (and no second warning per bad one)
        return []
    records = list(iter_records(results_dir, on_error=lambda msg: warn(f"skipped {msg}")))
    changed = []
    for path in map(Path, paths):
        old = path.read_text()
        new = fill_board_markers(old, records, results_dir, path)
        if new != old:
            atomic_write_text(path, new)
            changed.append(path)
    return changed
