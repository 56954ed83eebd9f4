"""Ways to tamper with a signed certificate PDF, as an attacker with a PDF library would (no tests here).

Each returns new bytes and leaves the input alone. The page text is in reportlab's compressed content
streams, so edits go through pypdf: decode the page's stream, replace a string, store it again.
"""

from __future__ import annotations

import io

from pypdf import PdfReader, PdfWriter
from pypdf.generic import ContentStream, NameObject


def _replace_in_first_page(writer: PdfWriter, old: bytes, new: bytes) -> None:
    page = writer.pages[0]
    raw = page.get_contents().get_data()  # type: ignore[union-attr]
    if old not in raw:
        raise ValueError(f"{old!r} is not in the first page's content stream")
    stream = ContentStream(None, None)
    stream.set_data(raw.replace(old, new))
    page[NameObject("/Contents")] = writer._add_object(stream)


def rewrite_text(data: bytes, old: bytes, new: bytes) -> bytes:
    """The whole file written again with `old` replaced by `new` in the first page's text (what
    "open, edit, save" in an editor does): the signature dictionary is kept, its byte ranges are not."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    _replace_in_first_page(writer, old, new)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def edit_text_incrementally(data: bytes, old: bytes, new: bytes) -> bytes:
    """The signed bytes untouched, plus an incremental update whose new page content says `new`
    where the signed one said `old` (the signature still verifies for the revision it covers)."""
    writer = PdfWriter(io.BytesIO(data), incremental=True)
    _replace_in_first_page(writer, old, new)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def add_text_incrementally(data: bytes, text: str) -> bytes:
    """An incremental update that draws `text` over the first page, leaving every signed word in place."""
    from reportlab.pdfgen import canvas

    overlay = io.BytesIO()
    page = canvas.Canvas(overlay)
    page.setFont("Helvetica-Bold", 14)
    page.drawString(60, 60, text)
    page.save()
    writer = PdfWriter(io.BytesIO(data), incremental=True)
    writer.pages[0].merge_page(PdfReader(io.BytesIO(overlay.getvalue())).pages[0])
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def strip_signature(data: bytes) -> bytes:
    """The revision before the signature: the signature is an incremental update, so cutting the file
    after the first %%EOF gives the unsigned PDF back, attachment and text unchanged."""
    end = data.index(b"%%EOF") + len(b"%%EOF")
    return data[:end] + b"\n"
