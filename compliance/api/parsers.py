"""The REST API's JSON parser: malformed or hostile JSON (nesting deeper than 64 levels, an integer over
Python's 4,300-digit limit) is a 400 with a plain message, never a 500 from deep inside the parser.

It is a BaseParser, not a JSONParser subclass: DRF 3.18 reads `request.body` for any JSONParser, and
Django caps `body` at DATA_UPLOAD_MAX_MEMORY_SIZE (64 KB), which silently refused every guard call
over 64 KB (the guard takes 4 MiB). Reading the stream leaves the size limits to
BodySizeLimitMiddleware, per endpoint, on the declared Content-Length."""

from __future__ import annotations

import codecs
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from proofs.canonical import JSONLimitError, loads_limited


class LimitedJSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict[str, Any] | None = None) -> Any:
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.getreader(encoding)(stream).read()
        except (UnicodeDecodeError, LookupError) as exc:
            raise ParseError(f"JSON parse error - the body is not {encoding} text") from exc
        try:
            return loads_limited(text, parse_constant=_refuse_constant)
        except JSONLimitError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")
