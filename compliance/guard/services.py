"""Suppression rules: the Django side of the inference guard (the matching itself is pure, in matcher.py).

An approved request's identifiers become keyed hashes (HMAC-SHA256 under settings.GUARD_HMAC_KEY)
of their normalised forms; only the digests are stored. The erasure app unseals the identifiers
(`ErasureRequest.subject()`) and hands them here; they go to `matcher.rule_hashes` and are dropped: it never reaches a column, a log line, the audit leaf or an
exception message.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from compliance.audit.services import audit_append
from compliance.guard.models import GuardRulesVersion, SuppressionRule
from compliance.guard.runtime import guard_key, invalidate
from pii.identifiers import SubjectIdentifiers
from pii.matcher import RuleHash, rule_hashes


def _subject_rule_hashes(subject: SubjectIdentifiers, key: bytes) -> tuple[list[RuleHash], int]:
    """Rules for every usable identifier, and how many identifiers could not become a rule.

    matcher.rule_hashes refuses a whole set when one value is unusable (an identifier of three
    characters would match ordinary text). An approval must not fail because the subject gave one
    short identifier, so each value is hashed on its own and the refused ones are counted (the
    count goes to the audit log, the values nowhere).
    """
    rules: list[RuleHash] = []
    refused = 0
    for part in subject.single_fields():
        try:
            rules.extend(rule_hashes(part, key))
        except ValueError:  # the message names the field only; nothing to log here
            refused += 1
    return rules, refused


def rules_version_bump() -> int:
    """Advance the rules version (every serving process rebuilds its index on its next check)."""
    GuardRulesVersion.objects.get_or_create(id=1)
    GuardRulesVersion.objects.filter(id=1).update(version=F("version") + 1, changed_at=timezone.now())
    return GuardRulesVersion.objects.values_list("version", flat=True).get(id=1)


def suppression_rules_create(*, request: Any, subject: SubjectIdentifiers, actor: str, unusable: int = 0) -> int:
    """Store the keyed hashes of `subject` (the identifiers of `request`) as active rules; returns how
    many are new. `unusable`: values the caller already left out of `subject` (counted as refused).

    Runs inside the approval's transaction (erasure_request_approve), so a failed approval leaves
    no rules behind and an approval never commits without its rules.

    1. Derive the rule digests from the unsealed identifiers (pure matcher code).
    2. Insert the rules this subject does not have yet; re-activate ones that were switched off.
    3. Bump the rules version, so every guard process reloads within its check interval.
    4. Append `guard.rules_created` with counts per kind (no values, no digests).
    5. After commit, tell this process's guard to reload at its next call.
    """
    rules, refused = _subject_rule_hashes(subject, guard_key())
    refused += unusable
    with transaction.atomic():
        existing = {
            (kind, digest): (pk, active)
            for pk, kind, digest, active in SuppressionRule.objects.filter(subject_ref=request.subject_ref).values_list(
                "pk", "kind", "digest", "active"
            )
        }
        new_rules: list[SuppressionRule] = []
        reactivate: list[int] = []
        for rule in rules:
            found = existing.get((rule.kind, rule.digest_hex))
            if found is None:
                new_rules.append(
                    SuppressionRule(request=request, subject_ref=request.subject_ref, kind=rule.kind, digest=rule.digest_hex)
                )
            elif not found[1]:
                reactivate.append(found[0])
        SuppressionRule.objects.bulk_create(new_rules)
        if reactivate:
            SuppressionRule.objects.filter(pk__in=reactivate).update(active=True)
        version = rules_version_bump()
        per_kind = Counter(rule.kind for rule in rules)
        audit_append(
            event_type="guard.rules_created",
            actor=actor,
            outcome="ok",
            request_id=request.id,
            subject_ref=request.subject_ref,
            details={
                "count": len(rules),
                "new": len(new_rules),
                "refused_identifiers": refused,
                "rules_version": version,
                **{f"kind_{kind}": count for kind, count in sorted(per_kind.items())},
            },
        )
        transaction.on_commit(_invalidate_local_cache)
    return len(new_rules)


@dataclass(frozen=True)
class Rederived:
    requests: int  # requests whose rules were looked at
    added: int  # rules added (a new kind or a new normalisation)
    retired: int  # active rules switched off because the current derivation no longer gives them
    skipped: int  # requests whose identifiers can no longer be read (erased or purged)


def suppression_rules_remove(*, request: Any) -> int:
    """Delete a request's rules (a purged request that was refused or withdrawn: nothing is to be
    suppressed, and its keyed digests of the person's identifiers must not outlive the purge).
    Returns how many were deleted."""
    deleted, _ = SuppressionRule.objects.filter(request=request).delete()
    if deleted:
        rules_version_bump()
        transaction.on_commit(_invalidate_local_cache)
    return int(deleted)


def requests_with_active_rules() -> list[Any]:
    """The ids of the requests that have active rules (what suppression_rules_rederive looks at)."""
    return list(
        SuppressionRule.objects.filter(active=True).values_list("request_id", flat=True).distinct().order_by("request_id")
    )


def suppression_rules_rederive(
    *, subjects: Iterable[tuple[Any, Callable[[], SubjectIdentifiers]]], actor: str, dry_run: bool = False
) -> Rederived:
    """Derive the rules of every request that has active rules again, with the current matcher.

    After a change of derivation (a new rule kind such as "name_lc" for distinctive names, a new
    normalisation), rules stored earlier keep matching what they matched; this adds what the current
    derivation gives and switches off the active rules it no longer gives, per request, in one
    transaction each, with a `guard.rules_rederived` audit event (counts only). Requests whose
    identifiers cannot be unsealed any more (their data key was destroyed) keep their rules as they
    are. dry_run: count, change nothing.

    `subjects`: (request, a function unsealing its identifiers) for the requests of
    requests_with_active_rules(); the erasure app supplies them (erasure_guard_rules_rederive).
    """
    added = retired = skipped = looked = 0
    key = guard_key()
    for request, unseal in subjects:
        looked += 1
        try:
            rules, _refused = _subject_rule_hashes(unseal(), key)
        except Exception:  # noqa: BLE001 - a destroyed data key or purged identifiers: keep the rules as they are
            skipped += 1
            continue
        wanted = {(rule.kind, rule.digest_hex) for rule in rules}
        with transaction.atomic():
            current = SuppressionRule.objects.select_for_update().filter(request=request)
            have = {(r.kind, r.digest): r for r in current}
            to_add = [k for k in wanted if k not in have]
            to_retire = [r.pk for k, r in have.items() if r.active and k not in wanted]
            to_reactivate = [r.pk for k, r in have.items() if not r.active and k in wanted]
            added += len(to_add) + len(to_reactivate)
            retired += len(to_retire)
            if dry_run or not (to_add or to_retire or to_reactivate):
                continue
            SuppressionRule.objects.bulk_create(
                [SuppressionRule(request=request, subject_ref=request.subject_ref, kind=k, digest=d) for k, d in sorted(to_add)]
            )
            SuppressionRule.objects.filter(pk__in=to_retire).update(active=False)
            SuppressionRule.objects.filter(pk__in=to_reactivate).update(active=True)
            version = rules_version_bump()
            audit_append(
                event_type="guard.rules_rederived",
                actor=actor,
                outcome="ok",
                request_id=request.id,
                subject_ref=request.subject_ref,
                details={"added": len(to_add) + len(to_reactivate), "retired": len(to_retire), "rules_version": version},
            )
            transaction.on_commit(_invalidate_local_cache)
    return Rederived(requests=looked, added=added, retired=retired, skipped=skipped)


def _invalidate_local_cache() -> None:
    invalidate()
