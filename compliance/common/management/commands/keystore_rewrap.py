"""Finish a rotation of the key-encryption key (FIELD_ENCRYPTION_KEY) without downtime.

1. Set the new FIELD_ENCRYPTION_KEY and put the old one in FIELD_ENCRYPTION_KEYS_PREVIOUS; restart.
   Every process reads keys wrapped by either.
2. Run this command: every live data key is wrapped under the new key.
3. Remove the old key from FIELD_ENCRYPTION_KEYS_PREVIOUS; restart.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from compliance.common.models import key_store


class Command(BaseCommand):
    help = "Wrap every data key in the key store under the current FIELD_ENCRYPTION_KEY."

    def handle(self, *args: Any, **options: Any) -> None:
        count = key_store().rewrap()
        self.stdout.write(f"{count} data key(s) rewrapped under the current key-encryption key")
