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


ROLE_PERMISSIONS = {
    "officer": ["erasure.view_erasurerequest", "erasure.decide_erasurerequest", "erasure.add_erasurerequest"],
    "reviewer": ["erasure.view_erasurerequest"],
    "api-client": ["erasure.add_erasurerequest"],
}


def ensure_roles() -> None:
    """Create the role groups with their permissions if missing (idempotent; migration 0003 does the
    same at install time, this repairs a database whose tables were emptied)."""
    from django.contrib.auth.models import Group, Permission

    for name, perms in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=name)
        for dotted in perms:
            app_label, codename = dotted.split(".")
            group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
