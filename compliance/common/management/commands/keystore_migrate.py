"""Move data keys still wrapped in the application database into the key store (once, after upgrading).

Until a key is moved, every database backup holds it. After this command the database holds none; the
backups taken before it still do until they expire, which the output says.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from compliance.common.models import DataKey


class Command(BaseCommand):
    help = "Move data keys wrapped in the application database into the key store."

    def handle(self, *args: Any, **options: Any) -> None:
        from django.db import transaction

        moved = 0
        for key_id in DataKey.objects.filter(store=DataKey.Store.DATABASE, destroyed_at__isnull=True).values_list("id", flat=True):
            with transaction.atomic():  # the row locked: a purge cannot destroy it between read and move
                key = DataKey.objects.select_for_update().get(pk=key_id)
                moved += int(key.move_to_key_store())
        self.stdout.write(
            f"{moved} data key(s) moved to the key store at {settings.KEYSTORE_PATH}. Database backups taken "
            "before now still hold them until those backups expire."
        )
