"""A private document as an HTTP download: the pages and the API of every face serve certificates
through this one helper, so their headers cannot drift apart."""

from __future__ import annotations

from django.http import HttpResponse


def private_download(data: bytes, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(data, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Content-Length"] = str(len(data))
    # Private documents: never kept by shared caches, and the status token must not leak on.
    response["Cache-Control"] = "private, no-store"
    return response
