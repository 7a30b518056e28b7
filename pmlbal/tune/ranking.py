"""The tuner's rules for comparing points, each written once (docs/tuner.md, "Ranking and the pick").

- **Ranking**: points by the mean of their runs; ties to more runs (a mean over more runs is better
  evidence), then to the point seen first. The engine, its confirm rounds, `pick`, the report and the
  progress bar all rank with `ranked`, so they cannot disagree about a tie.
- **The confirm choice**: among the `TOP_POINTS` best points (and the defaults, when the search has
  them), the one with the fewest runs is run again; ties to the better ranked.
- **The pick**: the best point among the confirmed ones (at least `CONFIRMED_RUNS` runs) when there are
  any, so a lucky single run (a winner's curse) cannot be the pick; and, when the search started from
  the defaults, that point only if it is confirmed and beats the defaults on paired runs (`paired_gain`)
  by more than the standard error of the difference. Otherwise the pick is the defaults: one lucky run
  (a budget too small to confirm anything) never replaces them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Hashable, Iterable, Mapping, Sequence, TypeVar

K = TypeVar("K", bound=Hashable)

#: Points the confirm phase keeps re-measuring (and the report marks): the best three by mean.
TOP_POINTS = 3
#: Runs a point needs to count as confirmed (the confirm phase re-ran it at least once).
CONFIRMED_RUNS = 2


def rank_key(mean: float, runs: int, seen: int) -> tuple[float, int, int]:
    """Sort key of one point: ascending order is best first (highest mean, more runs, seen first)."""
    return (-mean, -runs, seen)


def ranked(points: Iterable[K], mean: Callable[[K], float], runs: Callable[[K], int],
           seen: Callable[[K], int]) -> list[K]:
    """`points` best first: by `mean` (higher is better; negate it for a minimising study), ties
    to more `runs`, then to the smaller `seen` (the order the point was first seen in)."""
    return sorted(points, key=lambda k: rank_key(mean(k), runs(k), seen(k)))


def best(points: Iterable[K], mean: Callable[[K], float], runs: Callable[[K], int],
         seen: Callable[[K], int]) -> K | None:
    """The first of `ranked(...)`, None when there are no points."""
    order = ranked(points, mean, runs, seen)
    return order[0] if order else None


def pick_best(points: Iterable[K], mean: Callable[[K], float], runs: Callable[[K], int],
              seen: Callable[[K], int]) -> K | None:
    """The best point among those with at least `CONFIRMED_RUNS` runs; among all points only when
    none has that many (a search without a confirm phase). None when there are no points."""
    points = list(points)
    confirmed = [k for k in points if runs(k) >= CONFIRMED_RUNS]
    return best(confirmed or points, mean, runs, seen)


def confirm_choice(top: Sequence[K], count: Callable[[K], int]) -> K:
    """The point of `top` (best first) to run again: the one with the fewest runs, ties to the better ranked."""
    return min(top, key=lambda k: (count(k), top.index(k)))


@dataclass(frozen=True)
class PairedGain:
    """A point against the defaults on the runs both have (same run index = same training seeds):
    the mean of the differences, its standard error and the number of pairs."""

    mean: float
    se: float
    pairs: int

    @property
    def beats(self) -> bool:
        """More than one standard error better (False without a pair)."""
        return self.pairs > 0 and self.mean > self.se


def paired_gain(runs: Mapping[int, float], default_runs: Mapping[int, float], noise: float = 0.0) -> PairedGain:
    """The paired difference of a point's runs and the defaults' runs of the same indices. The
    standard error is the sample one (n - 1) but never below ``noise / sqrt(n)``, `noise` being the
    measured s.d. of a paired difference of two runs: two runs that happen to agree do not make a
    difference certain."""
    common = sorted(set(runs) & set(default_runs))
    diffs = [runs[k] - default_runs[k] for k in common]
    n = len(diffs)
    if n == 0:
        return PairedGain(math.nan, math.nan, 0)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else 0.0
    return PairedGain(mean, max(sd, noise) / math.sqrt(n), n)
