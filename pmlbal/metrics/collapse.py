"""When a trained embedding has collapsed: a failure, not a result to rank.

Two signs, either enough (the thresholds travel with every record that is judged, `collapse_of`):

- dimensional collapse: the test embeddings' effective rank (`effective_rank`, 1 when every
  embedding lies on one line) below COLLAPSE_RANK;
- on the test split, training made it worse than the untrained network by more than COLLAPSE_MARGIN
  of the data set's lead metric (absolute), far beyond seed noise on the boards' data sets (a few
  points of MAP@R). Validation folds are judged by the rank alone: on two or three held-out classes a
  sound run often scores ten points under the untrained network (digits' folds, rank 4 to 40).

The fault trial's run at a learning rate of 3e3 on digits ended at effective rank 1.04 (MAP@R 17.7 %).
Outside the collapsed glyph configurations (balance 0.25), the lowest effective rank of a committed
test run is 3.2 (Fashion-MNIST): run-to-run noise does not reach the rank threshold.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

#: Effective rank below which the embedding counts as collapsed to a line.
COLLAPSE_RANK = 1.5
#: How far below the untrained network's lead metric (absolute) a run counts as collapsed.
COLLAPSE_MARGIN = 0.10


def collapse_reason(final: Mapping[str, Any], initial: Mapping[str, Any] | None, metric: str | None) -> str | None:
    """Why the run with these final (and untrained, `initial`) metrics collapsed, or None if it did not;
    `metric` None: the rank alone (validation runs)."""
    rank = final.get("effective_rank")
    if isinstance(rank, (int, float)) and math.isfinite(rank) and rank < COLLAPSE_RANK:
        return f"effective rank {rank:.2f} < {COLLAPSE_RANK} (the embeddings lie on about one line)"
    if metric is None:
        return None
    before, after = (initial or {}).get(metric), final.get(metric)
    if isinstance(before, (int, float)) and isinstance(after, (int, float)) and after < before - COLLAPSE_MARGIN:
        return (f"{metric} {100 * after:.2f} % is more than {100 * COLLAPSE_MARGIN:.0f} points below the untrained "
                f"network's {100 * before:.2f} %")
    return None


def lead_metric(dataset: str | None) -> str:
    """The data set's lead metric (the boards' sort key: MAP@R where Recall@1 saturates); Recall@1 for
    a data set this process does not know."""
    from ..registry import dataset_spec

    try:
        return dataset_spec(dataset).lead_metric
    except (KeyError, ValueError, TypeError):
        return "recall@1"


def collapse_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """The verdict a record stores under "collapse": the reason (None: not collapsed), the lead metric
    judged and the thresholds used, so a reader can check it against the record's own metrics."""
    config = record.get("config") or {}
    on_test = config.get("eval_split", "test") == "test"
    metric = lead_metric(config.get("dataset")) if on_test else None
    return {"reason": collapse_reason(record.get("final") or {}, record.get("initial"), metric), "metric": metric,
            "rank_below": COLLAPSE_RANK, "margin": COLLAPSE_MARGIN if on_test else None}


def record_collapse(record: Mapping[str, Any]) -> str | None:
    """Why a record's run collapsed (None: it did not): its stored verdict, or (records older than the
    verdict) the same rule applied to its metrics now."""
    return (record.get("collapse") or collapse_of(record)).get("reason")


def is_collapsed(record: Mapping[str, Any]) -> bool:
    """Whether a record's run collapsed (`record_collapse`)."""
    return record_collapse(record) is not None
