"""Estimates of sycophantic and uncertainty-driven conformity."""

from __future__ import annotations

from muse_eval.analysis.estimates import (
    ConformityCurve,
    fit_conformity_curve,
    wilson_interval,
)

__all__ = ["ConformityCurve", "fit_conformity_curve", "wilson_interval"]
