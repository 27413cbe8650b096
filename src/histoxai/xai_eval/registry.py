"""Metric metadata, declared where each metric is defined.

Every measuring module declares its metrics with :func:`declare` next to the code that
computes them (name, family, direction, whether it is the family's primary metric);
the ranking, the statistics and the report read :data:`METRICS` and never keep a table
of their own.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One per-patch metric.

    Attributes:
        name: column name in the per-patch tables (``mass_accuracy``).
        family: the property it measures: ``localisation``, ``faithfulness``,
            ``randomisation``, ``robustness``, ``intervention``, ``tissue``.
        higher: True when larger values are better.
        primary: the one metric of its family that the verdict reads.
        normalised: reported as (s - random_res) / (oracle_res - random_res) too.
    """

    name: str
    family: str
    higher: bool
    primary: bool = False
    normalised: bool = False

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b`` in this metric's direction."""
        return a > b if self.higher else a < b


METRICS: dict[str, Metric] = {}
"""Name -> :class:`Metric`, filled by the modules' :func:`declare` calls."""


def declare(name: str, family: str, higher: bool, primary: bool = False, normalised: bool = False) -> str:
    """Register a metric and return its name (use as the key the module writes)."""
    metric = Metric(name, family, higher, primary, normalised)
    if name in METRICS and METRICS[name] != metric:
        raise ValueError(f"metric {name!r} declared twice with different metadata")
    if primary and any(m.primary and m.family == family and m.name != name for m in METRICS.values()):
        raise ValueError(f"family {family!r} already has a primary metric")
    METRICS[name] = metric
    return name


def primary(family: str) -> Metric:
    """The primary metric of ``family``."""
    for m in METRICS.values():
        if m.family == family and m.primary:
            return m
    raise KeyError(f"no primary metric declared for family {family!r}")
