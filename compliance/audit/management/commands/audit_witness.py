from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from compliance.audit import witnessing
from compliance.audit.models import AuditWitnessAlert
from compliance.audit.services import audit_append


class Command(BaseCommand):
    help = (
        "Send pending checkpoints to the witnesses now and show each witness's newest cosigned size and the open "
        "alerts; --resolve ID closes an alert once its cause is understood (logged as audit.witness_alert_resolved)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--resolve", type=int, metavar="ID", help="close this alert (after investigating it)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["resolve"] is not None:
            with transaction.atomic():
                alert = AuditWitnessAlert.objects.select_for_update().filter(pk=options["resolve"]).first()
                if alert is None or alert.resolved_at is not None:
                    raise CommandError(f"no open witness alert with id {options['resolve']}")
                alert.resolved_at = timezone.now()
                alert.save(update_fields=["resolved_at"])
                audit_append(event_type="audit.witness_alert_resolved", actor="system", outcome="ok",
                             details={"alert": alert.pk, "size": alert.checkpoint_size, "status": alert.status})
            self.stdout.write(f"alert {alert.pk} resolved")
            return
        if not witnessing.witnesses():
            self.stdout.write("no witness configured (AUDIT_WITNESSES)")
            return
        for hint, result in witnessing.witness_submit_pending().items():
            self.stdout.write(f"{hint}: {result if isinstance(result, str) else f'{result} checkpoint(s) cosigned now'}")
        for status in witnessing.witness_status():
            self.stdout.write(f"{status.hint} at {status.url}: newest cosigned size {status.last_cosigned_size}")
        for alert in witnessing.open_alerts():
            self.stdout.write(f"ALERT {alert.pk}: {alert.witness} refused size {alert.checkpoint_size} "
                              f"(HTTP {alert.status}): {alert.reason}")
