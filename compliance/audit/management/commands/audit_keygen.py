from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from compliance.audit import signing


class Command(BaseCommand):
    help = "Create the audit log's signing key, or rotate it (--rotate, then --retire <name+keyid>)."

    def add_arguments(self, parser: Any) -> None:
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--rotate", action="store_true", help="add a new key that signs alongside the current one")
        group.add_argument("--retire", metavar="NAME+KEYID", help="stop signing with this key; it stays published")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["rotate"]:
                key = signing.rotate_start()
                self.stdout.write(f"new key {key.key_hint} added; both keys sign until you retire the old one")
            elif options["retire"]:
                signing.rotate_finish(options["retire"])
                self.stdout.write(f"key {options['retire']} retired (still published)")
            else:
                signing.ensure_keys(create_in_production=True)
            for entry in signing.keyring().entries:
                self.stdout.write(f"{entry.status:8} {entry.public_key.to_vkey()}")
            for key in signing.keys_not_named_by_origin():
                self.stdout.write(
                    f"note: {key.key_hint} is not named by the log origin {signing.key_name()} (C2SP); new keys are. "
                    f"Rotate with --rotate, then --retire {key.key_hint}"
                )
        except (ValueError, signing.SigningKeyMissing) as exc:
            raise CommandError(str(exc)) from exc
