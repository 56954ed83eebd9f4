"""Private status links: a signed, unguessable token naming one request (no personal data in the URL)."""

from __future__ import annotations

from django.core import signing

from compliance.erasure.models import ErasureRequest

STATUS_SALT = "erasure-status"


def status_token(request: ErasureRequest) -> str:
    return signing.dumps(str(request.id), salt=STATUS_SALT, compress=True)
