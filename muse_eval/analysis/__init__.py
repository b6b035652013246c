"""Estimates of sycophantic and uncertainty-driven conformity.

`analyze_runs` reads stored runs through the database's views and returns an
`Analysis`; ``muse-eval analyze`` prints it and ``muse-eval report`` draws it.
"""

from __future__ import annotations

from muse_eval.analysis.analyze import analyze_runs
from muse_eval.analysis.estimates import (
    ConformityCurve,
    fit_conformity_curve,
    wilson_interval,
)
from muse_eval.analysis.results import Analysis, ConditionComponents, RunAnalysis

__all__ = [
    "Analysis",
    "ConditionComponents",
    "ConformityCurve",
    "RunAnalysis",
    "analyze_runs",
    "fit_conformity_curve",
    "wilson_interval",
]
