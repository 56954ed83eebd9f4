from __future__ import annotations

from typing import Any


def suppression_rules_create(*, request: Any, actor: str) -> int:
    """Placeholder until the guard's Django side lands (work in progress)."""
    return 0
