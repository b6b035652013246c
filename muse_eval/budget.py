"""``--max-cost``: stop a run before it spends more than its budget.

Checking what was spent after each request stops a run only once it is over budget,
by as much as every request then in flight costs. The budget here is predictive
instead: before a unit sends its first request it reserves what the unit can cost at
most (its prompt, estimated generously, plus ``max_tokens`` for every reply, at the
price table's rates). A unit whose reservation does not fit next to what is spent
and reserved is not sent. When a response arrives its actual cost is spent, and the
unit's reservation is released when the unit ends. The run therefore stops cleanly:
every unit in flight finishes and is stored, and no unit starts that could push the
total past the budget.

Requests that fail and are retried are not priced: hosted APIs do not bill 429s and
5xx errors, and muse-eval cannot know which other failures they bill.
"""

from __future__ import annotations

import logging

from muse_eval.errors import BudgetExceeded

__all__ = ["CostBudget"]

logger = logging.getLogger(__name__)


class CostBudget:
    """Spent and reserved dollars of one run.

    Args:
        limit: The budget in USD; None for no budget.
        spent: Cost already stored for the run by earlier invocations.
    """

    def __init__(self, limit: float | None, spent: float = 0.0) -> None:
        self.limit = limit
        self.spent = spent
        self.reserved = 0.0
        self.refused = 0

    @property
    def stopped(self) -> bool:
        """True once a unit was refused: the run is winding down."""
        return self.refused > 0

    def reserve(self, estimate: float | None) -> float:
        """Reserve `estimate` dollars for a unit about to start.

        Args:
            estimate: The unit's largest likely cost; None when it cannot be priced.

        Returns:
            The amount reserved, to hand back to `release`.

        Raises:
            BudgetExceeded: The unit could take the run past its budget.
        """
        if self.limit is None or estimate is None:
            return 0.0
        if self.spent + self.reserved + estimate > self.limit:
            self.refused += 1
            raise BudgetExceeded(self.message(estimate))
        self.reserved += estimate
        return estimate

    def spend(self, cost: float | None) -> None:
        """Count the actual cost of one response."""
        if cost:
            self.spent += cost

    def release(self, reserved: float) -> None:
        """Hand back a unit's reservation once the unit has ended."""
        self.reserved = max(0.0, self.reserved - reserved)

    def message(self, estimate: float | None = None) -> str:
        """The sentence that tells the user why the run stopped."""
        assert self.limit is not None
        next_unit = f" and the next unit may cost ${estimate:.4f}" if estimate else ""
        return (
            f"The run stopped before exceeding its ${self.limit:.4f} budget: it has "
            f"spent ${self.spent:.4f}{next_unit}; every finished unit is stored, so "
            "run the same command with a larger --max-cost to go on."
        )
