"""A private document as an HTTP download: the pages and the API of every face serve certificates
through this one helper, so their headers cannot drift apart."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse


def private_download(data: bytes, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(data, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Content-Length"] = str(len(data))
    # Private documents: never kept by shared caches, and the status token must not leak on.
    response["Cache-Control"] = "private, no-store"
    return response


def error_page(request: HttpRequest, status: int, title: str, message: str) -> HttpResponse:
    """The branded error page (templates/public/error.html) with a plain-words title and message."""
    from django.shortcuts import render

    return render(request, "public/error.html", {"title": title, "message": message}, status=status)
