from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from compliance.certificates import pdfkeys
from proofs.pdfsign import certificate_fingerprint, describe_certificate


class Command(BaseCommand):
    help = (
        "Create the key that signs certificate PDFs and publish its certificate, or rotate it (--rotate: "
        "a new key signs from now on; the old certificates stay published)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--rotate", action="store_true", help="replace the signing key; keep the old certificates published")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["rotate"]:
                certificate = pdfkeys.pdf_signing_key_rotate()
                self.stdout.write(f"new PDF signing key {describe_certificate(certificate)} signs from now on")
            else:
                pdfkeys.ensure_pdf_signing_key(create_in_production=True)
            current = pdfkeys.pdf_signing_key().certificate
            for certificate in pdfkeys.published_pdf_certificates():
                status = "current" if certificate == current else "older"
                self.stdout.write(f"{status:8} {certificate_fingerprint(certificate)} {describe_certificate(certificate)}")
        except (ValueError, pdfkeys.PdfSigningKeyMissing) as exc:
            raise CommandError(str(exc)) from exc
