"""Small validators shared by the op specs and the recipe loader."""

from __future__ import annotations

import math


def check_prob(name: str, p: float) -> None:
    """Reject a probability outside [0, 1]."""
    if not isinstance(p, int | float) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")


def check_probs(name: str, probs: dict[str, float]) -> None:
    """Reject a probability table that is empty, negative or does not sum to 1."""
    if not probs:
        raise ValueError(f"{name} must not be empty")
    for k, v in probs.items():
        if not isinstance(v, int | float) or v < 0:
            raise ValueError(f"{name}[{k}] must be a non-negative number, got {v!r}")
    total = float(sum(probs.values()))
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ValueError(f"{name} must sum to 1, got {total:g} ({probs})")


def check_range(name: str, r: list[float], low: float | None = None, high: float | None = None) -> None:
    """Reject a ``[low, high]`` range that is malformed, reversed or out of bounds."""
    if not isinstance(r, list | tuple) or len(r) != 2 or not all(isinstance(v, int | float) for v in r):
        raise ValueError(f"{name} must be a [low, high] pair of numbers, got {r!r}")
    if r[0] > r[1]:
        raise ValueError(f"{name} must have low <= high, got {list(r)}")
    if low is not None and r[0] < low:
        raise ValueError(f"{name} must be >= {low}, got {list(r)}")
    if high is not None and r[1] > high:
        raise ValueError(f"{name} must be <= {high}, got {list(r)}")
