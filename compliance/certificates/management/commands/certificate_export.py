"""`manage.py certificate_export ER-2026-000123 [--out DIR] [--keyring] [--pdf-certs]`: write a request's certificate files.

Writes <DIR>/certificate-<reference>.json (the signed envelope, byte for byte) and .pdf (after
checking it against the SHA-256 logged at issue), optionally the published key ring and the published
PDF signing certificates (what `erasure-verify --keyring keys.json --pdf-cert pdf-signing.pem` pins),
and prints each path on its own line so scripts can pick them up.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, BinaryIO

from django.core.management.base import BaseCommand, CommandError, CommandParser

from compliance.audit import signing
from compliance.certificates import pdfkeys, services
from compliance.erasure.models import ErasureRequest
from unlearning_worker.files import write_atomic


def _write_bytes(data: bytes, stream: BinaryIO) -> None:
    stream.write(data)


class Command(BaseCommand):
    help = "Write a request's certificate (JSON and PDF) to a folder and print the paths."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("reference", help="request reference, e.g. ER-2026-000123")
        parser.add_argument("--out", default=".", help="folder to write into (created if missing)")
        parser.add_argument("--keyring", action="store_true", help="also write the published key ring (keys.json)")
        parser.add_argument(
            "--pdf-certs", action="store_true", help="also write the published PDF signing certificates (pdf-signing.pem)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        reference = str(options["reference"]).strip()
        erasure_request = ErasureRequest.objects.filter(reference=reference).first()
        if erasure_request is None:
            raise CommandError(f"no request {reference}")
        certificate = services.certificate_for(erasure_request)
        if certificate is None:
            raise CommandError(f"{reference} has no certificate (status: {erasure_request.status})")
        try:
            pdf = services.certificate_pdf_bytes(certificate)
        except services.CertificateFileDamaged as exc:
            raise CommandError(str(exc)) from None
        out = Path(options["out"]).expanduser().resolve()
        out.mkdir(parents=True, exist_ok=True)
        written = [
            (out / f"{certificate.download_stem}.json", bytes(certificate.envelope)),
            (out / f"{certificate.download_stem}.pdf", pdf),
        ]
        if options["keyring"]:
            written.append((out / "keys.json", signing.keyring().dumps().encode("utf-8")))
        if options["pdf_certs"]:
            written.append((out / "pdf-signing.pem", pdfkeys.published_pdf_certificates_pem()))
        for path, data in written:
            write_atomic(path, functools.partial(_write_bytes, data))
            self.stdout.write(str(path))
