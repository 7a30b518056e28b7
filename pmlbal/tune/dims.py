"""The search dimensions: `Dim` (one coordinate: its scale, bounds, lattice and steps), the key
that identifies a point, the Optuna distribution of a coordinate, and the scrambled-Sobol points of a
box (the explore phase's plan).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

SCALES = ("log", "log2-int", "log-int", "linear", "int", "categorical")


@dataclass(frozen=True)
class Dim:
    """One coordinate. `scale`: "log" (factor steps), "log2-int" (powers of two, e.g. batch size),
    "log-int" (whole numbers, factor steps), "linear", "int" or "categorical".

    Steps live in the scale's own units: log2 units for the log scales (1.0 = x2), value units for
    "linear" and "int", one choice for "categorical". `grid` is a lattice spacing for "linear" and
    "int" (Optuna's `step=`; 1 for "int" by default): every value is `low + k * grid` and every move
    is a whole number of grid steps.
    """

    name: str
    scale: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    step: float | None = None
    min_step: float | None = None
    grid: float | None = None

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"{self.name}: scale must be one of {', '.join(SCALES)}, got {self.scale!r}")
        if self.scale == "categorical":
            if len(self.choices) < 1:
                raise ValueError(f"{self.name}: a categorical coordinate needs choices")
            return
        if self.low is None or self.high is None or not self.low <= self.high:
            raise ValueError(f"{self.name}: needs low <= high, got {self.low}, {self.high}")
        if self.scale in ("log", "log2-int", "log-int") and self.low <= 0:
            raise ValueError(f"{self.name}: a {self.scale} coordinate needs low > 0, got {self.low}")
        if self.scale == "log2-int" and (int(self.low) != self.low or int(self.high) != self.high):
            raise ValueError(f"{self.name}: log2-int bounds must be integers")
        if self.scale == "log2-int" and not powers_of_two(self.low, self.high):
            raise ValueError(f"{self.name}: no power of two between {self.low} and {self.high}")
        if self.grid is not None:
            if self.scale not in ("linear", "int") or not self.grid > 0:
                raise ValueError(f"{self.name}: grid must be > 0 and is for linear or int coordinates, got {self.grid}")

    # -- values -------------------------------------------------------------------------------
    @property
    def _lattice(self) -> float | None:
        return self.grid if self.grid is not None else (1.0 if self.scale == "int" else None)

    def _kmax(self) -> int:
        return int(math.floor((self.high - self.low) / self._lattice + 1e-9))

    def _exponents(self) -> tuple[int, int]:
        return power_exponents(self.low, self.high)

    def to_unit(self, x: Any) -> float:
        if self.scale in ("log", "log2-int", "log-int"):
            return math.log2(x)
        return float(x)

    def from_unit(self, u: float) -> Any:
        """The valid value nearest to `u` (scale units): clipped to the box, on the lattice, of the right type."""
        if self.scale == "log2-int":
            lo, hi = self._exponents()
            return int(2 ** min(max(round(u), lo), hi))
        if self.scale == "log-int":
            return int(min(max(round(2.0**u), math.ceil(self.low)), math.floor(self.high)))
        if self.scale == "log":
            return float(min(max(2.0**u, self.low), self.high))
        q = self._lattice
        if q is None:
            return float(min(max(u, self.low), self.high))
        k = min(max(round((u - self.low) / q), 0), self._kmax())
        return int(round(self.low + k * q)) if self.scale == "int" else float(round(self.low + k * q, 12))

    def snap(self, x: Any) -> Any:
        """`x` made valid (categorical values must already be a choice)."""
        if self.scale == "categorical":
            if x not in self.choices:
                raise ValueError(f"{self.name}: {x!r} is not one of {self.choices}")
            return x
        if self.scale == "log" or (self.scale == "linear" and self.grid is None):
            # Continuous: clip only. A round trip through log2 moves large values by an ulp.
            return float(min(max(float(x), self.low), self.high))
        return self.from_unit(self.to_unit(x))

    def keep(self, x: Any) -> Any:
        """A starting value (the defaults, --x0) made valid: `snap`, except that a whole number inside
        the bounds of a power-of-two coordinate stays as given. The defaults are evaluated as a user
        trains them (digits' batch of 50, not 64), so the comparison with them is the board's; the
        descent's steps from there land on the powers of two round it."""
        if self._whole_in_box(x):
            return int(x)
        return self.snap(x)

    def _whole_in_box(self, x: Any) -> bool:
        return (self.scale == "log2-int" and isinstance(x, (int, float)) and not isinstance(x, bool)
                and math.isfinite(x) and float(x).is_integer() and self.low <= x <= self.high)

    def contains(self, x: Any) -> bool:
        if self.scale == "categorical":
            return x in self.choices
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or not self.low <= x <= self.high:
            return False
        if self._whole_in_box(x):  # a kept default (`keep`) is a point of the box
            return True
        return math.isclose(self.snap(x), x, rel_tol=1e-9, abs_tol=1e-12)

    def from_uniform(self, u: float) -> Any:
        """A value for u in [0, 1): uniform in the scale's own units (uniform choice, exponent, lattice index)."""
        u = min(max(float(u), 0.0), 1.0 - 1e-12)
        if self.scale == "categorical":
            return self.choices[int(u * len(self.choices))]
        if self.scale == "log2-int":
            lo, hi = self._exponents()
            return int(2 ** (lo + int(u * (hi - lo + 1))))
        if self.scale in ("log", "log-int"):
            return self.from_unit(math.log2(self.low) + u * (math.log2(self.high) - math.log2(self.low)))
        if self._lattice is not None:
            return self.from_unit(self.low + int(u * (self._kmax() + 1)) * self._lattice)
        return self.from_unit(self.low + u * (self.high - self.low))

    # -- steps --------------------------------------------------------------------------------
    def _on_lattice(self, step: float) -> float:
        q = self._lattice
        return step if q is None else max(q, math.floor(step / q + 1e-9) * q)

    def default_step(self) -> float:
        if self.scale == "categorical":
            return 1.0  # every other choice is probed; the step is not used
        if self.step is not None:
            return self._on_lattice(float(self.step))
        if self.scale in ("log", "log2-int", "log-int"):
            return 1.0
        return self._on_lattice((self.high - self.low) / 8.0) if self.high > self.low else self._lattice or 1.0

    def default_min_step(self) -> float:
        if self.scale == "categorical":
            return 1.0
        if self.min_step is not None:
            return self._on_lattice(float(self.min_step))
        if self.scale == "log2-int":
            return 1.0
        if self.scale in ("log", "log-int"):
            return 0.25
        if self._lattice is not None:
            return self._lattice
        return (self.high - self.low) / 64.0 if self.high > self.low else 1.0

    def halve(self, step: float, min_step: float) -> float:
        return max(self._on_lattice(step / 2.0), min_step)

    def centre(self) -> Any:
        if self.scale == "categorical":
            return self.choices[0]
        if self.scale in ("linear", "int"):
            return self.from_unit((self.low + self.high) / 2.0)
        return self.from_unit((math.log2(self.low) + math.log2(self.high)) / 2.0)

    def neighbours(self, x: Any, step: float) -> list[tuple[int, Any]]:
        """(direction, point) one step up and one down, within bounds, excluding x itself."""
        if self.scale == "categorical":
            i = self.choices.index(x)
            return [(+1, c) for j, c in enumerate(self.choices) if j != i]
        out = []
        for d in (+1, -1):
            y = self.from_unit(self.to_unit(x) + d * step)
            if key_value(y) != key_value(x):
                out.append((d, y))
        return out


def power_exponents(low: float, high: float) -> tuple[int, int]:
    """(e_lo, e_hi): the exponents of the smallest and largest powers of two in [low, high] (low > 0)."""
    return math.ceil(math.log2(low) - 1e-9), math.floor(math.log2(high) + 1e-9)


def powers_of_two(low: float, high: float) -> list[float]:
    """The powers of two in [low, high], ascending (1/4, 1/2, 1, 2, ... as floats)."""
    lo, hi = power_exponents(low, high)
    return [2.0**e for e in range(lo, hi + 1)]


def key_value(v: Any) -> Any:
    """A coordinate's value as a point key holds it: numbers rounded to 12 digits (1.0 and 1 agree)."""
    return round(float(v), 12) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def point_key(point: Mapping[str, Any], dims: Sequence[Dim] | Sequence[str]) -> tuple:
    """The one key of a point: its values (`key_value`) in the order of `dims` (coordinates or names;
    a name the point lacks keys as None)."""
    return tuple(key_value(point.get(d if isinstance(d, str) else d.name)) for d in dims)


def distribution_of(dim: Dim):
    """The Optuna distribution of a coordinate, the one mapping `suggest`, the samplers and the
    report use: log2-int and log-int as a log-scaled IntDistribution (power-of-two bounds make it
    "powers of two" to `dim_from_distribution`), int and linear with their grid as step."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if dim.scale == "categorical":
        return CategoricalDistribution(list(dim.choices))
    if dim.scale in ("log2-int", "log-int"):
        return IntDistribution(int(dim.low), int(dim.high), log=True)
    if dim.scale == "int":
        return IntDistribution(int(dim.low), int(dim.high), step=int(dim.grid or 1))
    return FloatDistribution(dim.low, dim.high, log=dim.scale == "log", step=dim.grid)


@functools.lru_cache(maxsize=64)
def sobol_points(dims: tuple[Dim, ...], n: int, seed: int) -> tuple[tuple[tuple[str, Any], ...], ...]:
    """Up to `n` distinct points of the box from scipy's scrambled Sobol sequence (`seed`), each
    coordinate mapped to its scale (`Dim.from_uniform`); fewer only when the box holds fewer distinct
    points. The sequence is drawn in powers of two (scipy's balance properties) and read in order."""
    from scipy.stats import qmc

    out, seen = [], set()
    m = max(5, math.ceil(math.log2(max(n, 1))) + 2)
    while len(out) < n and m <= 14:
        out, seen = [], set()
        for u in qmc.Sobol(d=len(dims), scramble=True, seed=seed).random_base2(m):
            point = tuple((d.name, d.from_uniform(ui)) for d, ui in zip(dims, u))
            key = tuple(key_value(v) for _, v in point)
            if key not in seen:
                seen.add(key)
                out.append(point)
                if len(out) == n:
                    break
        m += 2
    return tuple(out)
