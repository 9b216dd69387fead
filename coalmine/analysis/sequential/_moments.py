"""Running sufficient statistics for a mean: O(1) state, mergeable, JSON-serialisable."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike


@dataclass
class Moments:
    """Count, sum and sum of squares of a stream of numbers.

    Everything the normal-mixture confidence sequences need is a function of these three
    numbers, so a version/slice/metric keeps one `Moments` and adds only new rows to it.
    """

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    def add(self, values: ArrayLike) -> None:
        arr = np.asarray(values, dtype=np.float64).ravel()
        if arr.size == 0:
            return
        if not np.all(np.isfinite(arr)):
            raise ValueError("values: must be finite numbers (got NaN or inf)")
        self.n += int(arr.size)
        self.total += float(arr.sum())
        self.total_sq += float(np.dot(arr, arr))

    def add_one(self, x: float) -> None:
        x = float(x)
        if not np.isfinite(x):
            raise ValueError(f"value: must be a finite number (got {x!r})")
        self.n += 1
        self.total += x
        self.total_sq += x * x

    def merge(self, other: Moments) -> Moments:
        """A new `Moments` holding both streams (neither operand is modified)."""
        return Moments(self.n + other.n, self.total + other.total, self.total_sq + other.total_sq)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        """Unbiased sample variance; 0 when n < 2 (clamped at 0 against rounding)."""
        if self.n < 2:
            return 0.0
        centred = self.total_sq - self.total * self.total / self.n
        return max(centred, 0.0) / (self.n - 1)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "total": self.total, "total_sq": self.total_sq}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Moments:
        return cls(int(data["n"]), float(data["total"]), float(data["total_sq"]))
