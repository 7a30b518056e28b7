"""The search dimensions: `Dim` (one coordinate: its scale, bounds, lattice and steps), the key
that identifies a point, and the scrambled-Sobol points of a box (the explore phase's plan).
"""

from __future__ import annotations

import functools
import math
import warnings
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
        if self.scale == "log2-int" and math.floor(math.log2(self.high) + 1e-9) < math.ceil(math.log2(self.low) - 1e-9):
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
        return math.ceil(math.log2(self.low) - 1e-9), math.floor(math.log2(self.high) + 1e-9)

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

    def contains(self, x: Any) -> bool:
        if self.scale == "categorical":
            return x in self.choices
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or not self.low <= x <= self.high:
            return False
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


def key_value(v: Any) -> Any:
    return round(float(v), 12) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def point_key(point: Mapping[str, Any], dims: Sequence[Dim]) -> tuple:
    return tuple(key_value(point[d.name]) for d in dims)


@functools.lru_cache(maxsize=64)
def sobol_points(dims: tuple[Dim, ...], n: int, seed: int) -> tuple[tuple[tuple[str, Any], ...], ...]:
    """Up to `n` distinct points of the box from Optuna's scrambled Sobol sequence (seeded), each
    coordinate mapped to its scale; fewer only when the box holds fewer distinct points."""
    import optuna
    from optuna.distributions import FloatDistribution

    unit = {f"u{i}": FloatDistribution(0.0, 1.0) for i in range(len(dims))}
    out, seen = [], set()
    verbosity = optuna.logging.get_verbosity()
    with warnings.catch_warnings():
        # QMCSampler is "experimental"; scipy notes Sobol balance is best at powers of two: we need n.
        warnings.simplefilter("ignore")
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" line per plan
        try:
            sampler = optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed)
            study = optuna.create_study(sampler=sampler)
        finally:
            optuna.logging.set_verbosity(verbosity)
        for _ in range(max(64 * n, 256)):
            if len(out) == n:
                break
            # QMCSampler.sample_relative reads only the study's QMC counter, never the trial.
            u = sampler.sample_relative(study, None, unit)
            point = tuple((d.name, d.from_uniform(u[f"u{i}"])) for i, d in enumerate(dims))
            key = tuple(key_value(v) for _, v in point)
            if key not in seen:
                seen.add(key)
                out.append(point)
    return tuple(out)
