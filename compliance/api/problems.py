"""RFC 9457 problem details for every API error (DRF's handler, reshaped)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler


def problem_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, RequestDataTooBig):
        return _problem(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, "Request too large", "The request body is too large.")
    response = exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    body: dict[str, Any] = {"type": "about:blank", "title": _title(response.status_code), "status": response.status_code}
    if isinstance(data, dict) and set(data) == {"detail"}:
        body["detail"] = str(data["detail"])
    else:
        body["detail"] = "The request has invalid fields."
        body["errors"] = data
    response.data = body
    response.content_type = "application/problem+json"
    return response


def _title(code: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Error"


def _problem(code: int, title: str, detail: str, **extra: Any) -> Response:
    response = Response({"type": "about:blank", "title": title, "status": code, "detail": detail, **extra}, status=code)
    response.content_type = "application/problem+json"
    return response


def problem(code: int, detail: str, **extra: Any) -> Response:
    return _problem(code, _title(code), detail, **extra)
