"""Roles. Officers decide (permission erasure.decide_erasurerequest); reviewers read
(erasure.view_erasurerequest). Groups "officer" and "reviewer" carry them (see migration 0002)."""

from __future__ import annotations

from typing import Any


def can_decide(user: Any) -> bool:
    return bool(user and user.is_authenticated and user.is_active and user.has_perm("erasure.decide_erasurerequest"))


def can_view(user: Any) -> bool:
    return bool(
        user and user.is_authenticated and user.is_active and (user.has_perm("erasure.view_erasurerequest") or can_decide(user))
    )
