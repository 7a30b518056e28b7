"""The tuner's one ranking rule (SPEC section 5): points ordered by the mean of their runs.

Tie-break, in this order: more runs first (a mean over more runs is better evidence), then the
point seen first (the earlier trial). The engine's history, the confirm rounds' top 3, `pick` and
the trajectory report all rank with `ranked`, so they cannot disagree about a tie.

The pick (`pick_best`) ranks only confirmed points, those with at least `CONFIRMED_RUNS` runs, when
there are any: a point measured once is compared with points measured as often as it, never with
a re-measured one, so a lucky single run (a winner's curse) cannot be the pick.
"""

from __future__ import annotations

from typing import Callable, Hashable, Iterable, TypeVar

K = TypeVar("K", bound=Hashable)


def rank_key(mean: float, runs: int, first: int) -> tuple[float, int, int]:
    """Sort key of one point: ascending order is best first (highest mean, more runs, seen first)."""
    return (-mean, -runs, first)


def ranked(points: Iterable[K], mean: Callable[[K], float], runs: Callable[[K], int],
           first: Callable[[K], int]) -> list[K]:
    """`points` best first: by `mean` (higher is better; negate it for a minimising study), ties
    to more `runs`, then to the smaller `first` (the order the point was first seen in)."""
    return sorted(points, key=lambda k: rank_key(mean(k), runs(k), first(k)))


def best(points: Iterable[K], mean: Callable[[K], float], runs: Callable[[K], int],
         first: Callable[[K], int]) -> K | None:
    """The first of `ranked(...)`, None when there are no points."""
    order = ranked(points, mean, runs, first)
    return order[0] if order else None


#: Runs a point needs to count as confirmed (the confirm phase re-ran it at least once).
CONFIRMED_RUNS = 2


def pick_best(points: Iterable[K], mean: Callable[[K], float], runs: Callable[[K], int],
              first: Callable[[K], int]) -> K | None:
    """The pick: `best` among the points with at least `CONFIRMED_RUNS` runs; among all points only
    when none has that many (a search without a confirm phase). None when there are no points."""
    points = list(points)
    confirmed = [k for k in points if runs(k) >= CONFIRMED_RUNS]
    return best(confirmed or points, mean, runs, first)
