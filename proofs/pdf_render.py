"""Drawing the certificate PDF (reportlab): the facts of proofs.pdf laid out on A4 with a QR code of
the statement's hash, the signed statement embedded as `certificate.json`, written atomically. The
PAdES signature is added by proofs.pdfsign."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from proofs.canonical import canonical_json_document
from proofs.checkpoint import parse_checkpoint
from proofs.dsse import ensure_envelope_payload, parse_envelope
from proofs.envelope import validate_certificate_payload
from proofs.keys import b64encode
from proofs.pdf import (
    ATTACHMENT_NAME,
    NOT_MEASURED,
    Fact,
    exact_facts,
    figure_text,
    markup_text,
    plain,
    short_digest,
    summary_facts,
    threat_model_facts,
    timeline_facts,
    verdict_text,
)

_INK = "#1a2233"
_MUTED = "#5b6475"
_RULE = "#c9ced8"
_GREEN = "#1e7b3a"
_RED = "#b3261e"


def _qr_image(data: str, size_pt: float) -> Any:
    import qrcode
    from reportlab.platypus import Image

    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=6, border=2)
    qr.add_data(data)
    qr.make(fit=True)
    buffer = io.BytesIO()
    qr.make_image(fill_color="black", back_color="white").save(buffer, format="PNG")
    buffer.seek(0)
    return Image(buffer, width=size_pt, height=size_pt)


def qr_payload(payload: dict[str, Any], envelope_sha256: str) -> str:
    """What the QR code says: enough to match a paper copy against the log and the JSON file."""
    checkpoint = parse_checkpoint(payload["audit"]["checkpoint"])
    return (
        f"{payload['schema']};ref={payload['request']['reference']};id={payload['certificate_id']};"
        f"log={checkpoint.origin};size={checkpoint.size};root={b64encode(checkpoint.root)};"
        f"envelope-sha256={envelope_sha256}"
    )


def render_certificate_pdf_bytes(payload: dict[str, Any], envelope_json: bytes) -> bytes:
    """The PDF as bytes, with `certificate.json` (the envelope, byte for byte) attached."""
    from pypdf import PdfReader, PdfWriter
    from reportlab.lib import colors
    from reportlab.lib.enums import TA_LEFT
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    validate_certificate_payload(payload)
    envelope = parse_envelope(envelope_json)
    ensure_envelope_payload(envelope, canonical_json_document(payload))
    envelope_sha256 = hashlib.sha256(envelope_json).hexdigest()
    payload_sha256 = hashlib.sha256(canonical_json_document(payload)).hexdigest()
    checkpoint = parse_checkpoint(payload["audit"]["checkpoint"])
    request, issuer = payload["request"], payload["issuer"]
    verification, unlearning = payload["verification"], payload["unlearning"]
    organisation = issuer["organisation"]

    base = ParagraphStyle(
        "base", fontName="Helvetica", fontSize=9, leading=12, textColor=_INK, alignment=TA_LEFT
    )
    small = ParagraphStyle("small", parent=base, fontSize=7.5, leading=9.5, textColor=_MUTED)
    title = ParagraphStyle("title", parent=base, fontName="Helvetica-Bold", fontSize=20, leading=24)
    heading = ParagraphStyle(
        "heading",
        parent=base,
        fontName="Helvetica-Bold",
        fontSize=10.5,
        leading=14,
        spaceBefore=8,
        spaceAfter=3,
    )
    cell = ParagraphStyle("cell", parent=base, fontSize=8.5, leading=10.5)
    cell_bold = ParagraphStyle("cell_bold", parent=cell, fontName="Helvetica-Bold")

    def p(text: str, style: ParagraphStyle = cell) -> Paragraph:
        return Paragraph(text, style)

    def grid(rows: Sequence[Sequence[Any]], widths: Sequence[float], header: bool = True) -> Table:
        table = Table([list(r) for r in rows], colWidths=list(widths), hAlign="LEFT")
        style = [
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("LINEBELOW", (0, 0), (-1, -1), 0.4, colors.HexColor(_RULE)),
            ("TOPPADDING", (0, 0), (-1, -1), 2.5),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 2.5),
            ("LEFTPADDING", (0, 0), (-1, -1), 3),
        ]
        if header:
            style += [("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eef1f6"))]
        table.setStyle(TableStyle(style))
        return table

    def version(v: dict[str, str]) -> Paragraph:
        return p(f"{markup_text(v['version'])}<br/><font face='Courier' size='7'>{short_digest(v['sha256'])}</font>")

    width = A4[0] - 36 * mm
    story: list[Any] = [
        Paragraph("Certificate of erasure", title),
        Spacer(1, 2 * mm),
        Paragraph(
            f"{markup_text(organisation)} certifies the handling of erasure request <b>{markup_text(request['reference'])}</b> "
            f"under Article 17 GDPR, as recorded below. Personal data are not reproduced in this document: the "
            f"data subject is identified only by a pseudonymous reference.",
            base,
        ),
        Spacer(1, 3 * mm),
    ]
    def fact_rows(facts: Sequence[Fact]) -> list[tuple[Paragraph, Paragraph]]:
        return [
            (p(f.label, cell_bold), p(f"<font face='Courier'>{markup_text(f.text)}</font>" if f.mono else markup_text(f.text)))
            for f in facts
        ]

    left = grid(fact_rows(summary_facts(payload)), (32 * mm, 62 * mm), header=False)
    right = grid(fact_rows(timeline_facts(payload)), (28 * mm, 50 * mm), header=False)
    layout = Table([[left, right]], colWidths=(width * 0.55, width * 0.45), hAlign="LEFT")
    layout.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0)]))
    story += [layout, Paragraph("What was erased", heading)]

    if payload["models"]:
        rows: list[Sequence[Any]] = [(p("Model", cell_bold), p("Before", cell_bold), p("After", cell_bold))]
        rows += [(p(markup_text(m["model"])), version(m["before"]), version(m["after"])) for m in payload["models"]]
        story.append(grid(rows, (width * 0.34, width * 0.33, width * 0.33)))
    if payload["corpora"]:
        story.append(Spacer(1, 2 * mm))
        rows = [
            (
                p("Training corpus", cell_bold),
                p("Before", cell_bold),
                p("After", cell_bold),
                p("Records removed", cell_bold),
            )
        ]
        rows += [
            (p(markup_text(c["corpus"])), version(c["before"]), version(c["after"]), p(str(c["records_removed"])))
            for c in payload["corpora"]
        ]
        story.append(grid(rows, (width * 0.28, width * 0.28, width * 0.28, width * 0.16)))
    story.append(
        Paragraph(
            f"Unlearning method <b>{markup_text(unlearning['method'])}</b>, {unlearning['steps']} steps, stopped: "
            f"{markup_text(unlearning['stop_reason'])}. Job specification SHA-256 "
            f"<font face='Courier' size='7.5'>{unlearning['spec_sha256']}</font>.",
            ParagraphStyle("after_table", parent=base, spaceBefore=4),
        )
    )

    # Exact erasure (schema v3, only when the job retrained shard adapters): hashes, no personal data.
    if unlearning.get("exact") is not None:
        story.append(Paragraph("Exact erasure", heading))
        story.append(
            grid(
                [
                    (
                        p(fact.label, cell_bold),
                        p(
                            f"<font face='Courier' size='7.5'>{markup_text(fact.text)}</font>"
                            if fact.mono
                            else markup_text(fact.text)
                        ),
                    )
                    for fact in exact_facts(unlearning)
                ],
                (40 * mm, width - 40 * mm),
                header=False,
            )
        )
        story.append(
            Paragraph(
                "Each located record is proven absent, by a Merkle non-membership proof, from the data every shard "
                "adapter of the new version was trained on; the offline verifier checks these proofs, the recipe "
                "hash and, given the adapter store, the adapter files.",
                small,
            )
        )

    story.append(Paragraph("Verification of the erasure", heading))
    rows = [tuple(p(h, cell_bold) for h in ("Attack", "Before", "After", "Threshold", "Result"))]
    for row in verification["summary"]:
        outcome = (
            f"<font color='{_GREEN}'>passed</font>"
            if row["passed"]
            else f"<font color='{_RED}'>failed</font>"
        )
        rows.append(
            (
                p(markup_text(row["attack"])),
                p(markup_text(figure_text(row["before"]))),
                p(markup_text(row["after"])),
                p(markup_text(row["threshold"])),
                p(outcome),
            )
        )
    if verification["summary"]:
        story.append(grid(rows, (width * 0.36, width * 0.16, width * 0.16, width * 0.16, width * 0.16)))
    if any(row["before"] is None for row in verification["summary"]):
        story.append(
            Paragraph(
                f"Before {NOT_MEASURED}: not run on the base model (an attack only run against the new "
                "version, or a ratio of the new version to the base model).",
                small,
            )
        )
    passed = verification["verdict"] == "pass"
    verdict_colour = colors.HexColor(_GREEN if passed else _RED)
    verdict = Table(
        [
            [
                p(
                    f"<font color='white'><b>{verdict_text(verification)}</b> \u2014 "
                    f"{'the attacks above no longer recover the erased data from the new model versions' if passed else 'the attacks still recovered erased data'}"
                    f"; decided by {markup_text(verification['decided_by'])}.</font>"
                )
            ]
        ],
        colWidths=(width,),
        hAlign="LEFT",
    )
    verdict.setStyle(
        TableStyle(
            [
                ("BACKGROUND", (0, 0), (-1, -1), verdict_colour),
                ("TOPPADDING", (0, 0), (-1, -1), 4),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 4),
            ]
        )
    )
    story += [Spacer(1, 2 * mm), verdict]

    # What "erased" was measured against (schema v2; a v1 certificate does not state it).
    story.append(Paragraph("Threat model", heading))
    threat_model = verification.get("threat_model")
    if threat_model is None:
        story.append(
            Paragraph(f"This certificate ({markup_text(payload['schema'])}) does not state the threat model.", base)
        )
    else:
        story.append(
            grid(
                [(p(k, cell_bold), p(markup_text(v))) for k, v in threat_model_facts(threat_model)],
                (34 * mm, width - 34 * mm),
                header=False,
            )
        )
        if threat_model["never_seen_comparison"]:
            story.append(Spacer(1, 2 * mm))
            heads = (
                "Attack",
                "Mean z: subjects vs control (band)",
                "Rank-1 share vs control",
                "Top-10 share vs control",
            )
            rows = [tuple(p(h, cell_bold) for h in heads)]
            for row in threat_model["never_seen_comparison"]:
                rows.append(
                    (
                        p(markup_text(row["attack"])),
                        p(
                            markup_text(
                                f"{figure_text(row['mean_z'])} vs {figure_text(row['control_mean_z'])} "
                                f"(band {figure_text(row['mean_z_band'])})"
                            )
                        ),
                        p(markup_text(f"{figure_text(row['rank1_share'])} vs {figure_text(row['control_rank1_share'])}")),
                        p(markup_text(f"{figure_text(row['top10_share'])} vs {figure_text(row['control_top10_share'])}")),
                    )
                )
            story.append(grid(rows, (width * 0.22, width * 0.34, width * 0.22, width * 0.22)))
            story.append(
                Paragraph(
                    "Never-seen comparison: the subjects' true values ranked among same-format candidates, next "
                    "to people the model never saw. Erased data should look never seen: the subjects' mean z "
                    "differs from the control's by no more than the band, and their rank-1 and top-10 shares "
                    "are close to the control's.",
                    small,
                )
            )

    published = ", ".join(
        k["vkey"].split("+")[0] + "+" + k["vkey"].split("+")[1] + f" ({k['status']})"
        for k in payload["audit"]["public_keys"]
    )
    leaf_indexes = [str(leaf["index"]) for leaf in payload["audit"]["leaves"]]
    leaf_list = ", ".join(leaf_indexes[:12]) + (", \u2026" if len(leaf_indexes) > 12 else "")
    evidence = [
        ("Audit log", markup_text(checkpoint.origin)),
        (
            "Checkpoint",
            f"size {checkpoint.size}, root <font face='Courier' size='7'>{b64encode(checkpoint.root)}</font>",
        ),
        ("Audit leaves", f"{len(leaf_indexes)} events with inclusion proofs (leaves {leaf_list})"),
        ("Log keys", markup_text(published)),
        ("Payload SHA-256", f"<font face='Courier' size='7'>{payload_sha256}</font>"),
        ("Envelope SHA-256", f"<font face='Courier' size='7'>{envelope_sha256}</font>"),
    ]
    evidence_table = grid(
        [(p(k, cell_bold), p(v)) for k, v in evidence], (28 * mm, width - 28 * mm - 38 * mm), header=False
    )
    qr = _qr_image(qr_payload(payload, envelope_sha256), 34 * mm)
    block = Table([[evidence_table, qr]], colWidths=(width - 36 * mm, 36 * mm), hAlign="LEFT")
    block.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0)]))
    story.append(KeepTogether([Paragraph("Evidence", heading), block]))
    story.append(Spacer(1, 3 * mm))
    story.append(
        Paragraph(
            "How to verify this certificate offline: the signed certificate is attached to this PDF as "
            f"<font face='Courier'>{ATTACHMENT_NAME}</font>, and the PDF itself carries a PDF signature that any PDF "
            f"reader checks. With the public key ring and PDF signing certificates published by {markup_text(organisation)}, "
            "run <font face='Courier'>erasure-verify certificate.pdf --keyring keys.json --pdf-cert pdf-signing.pem</font> "
            "(no network, no database). It checks both signatures, the signed audit-log checkpoint, the inclusion "
            "proof of every audit event above, that the events match this request, and that the text printed here "
            "agrees with the attached file, which is the evidence.",
            small,
        )
    )

    def decorate(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        top = A4[1] - 12 * mm
        canvas.setFont("Helvetica-Bold", 10)
        canvas.setFillColor(colors.HexColor(_INK))
        canvas.drawString(18 * mm, top, plain(organisation))
        canvas.setFont("Helvetica", 8)
        canvas.setFillColor(colors.HexColor(_MUTED))
        canvas.drawRightString(
            A4[0] - 18 * mm, top, plain(f"Certificate of erasure \u2014 {request['reference']}")
        )
        canvas.setStrokeColor(colors.HexColor(_RULE))
        canvas.line(18 * mm, top - 3 * mm, A4[0] - 18 * mm, top - 3 * mm)
        canvas.line(18 * mm, 14 * mm, A4[0] - 18 * mm, 14 * mm)
        canvas.drawString(
            18 * mm,
            10 * mm,
            plain(
                f"Verify offline: erasure-verify <this file> --keyring <{organisation} key ring> \u2014 no network needed"
            ),
        )
        canvas.drawRightString(A4[0] - 18 * mm, 10 * mm, f"page {doc.page}")
        canvas.restoreState()

    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=20 * mm,
        bottomMargin=20 * mm,
        title=plain(f"Certificate of erasure {request['reference']}"),
        author=plain(organisation),
        subject=plain(f"GDPR Art. 17 erasure certificate {payload['certificate_id']}"),
        creator="erasure-compliance",
    )
    doc.build(story, onFirstPage=decorate, onLaterPages=decorate)

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(buffer.getvalue())))
    writer.add_attachment(ATTACHMENT_NAME, bytes(envelope_json))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def render_certificate_pdf(payload: dict[str, Any], envelope_json: bytes, out_path: str | Path) -> Path:
    """Render and write atomically (unsigned: the service signs with `pdfsign` before writing)."""
    return write_pdf_atomic(render_certificate_pdf_bytes(payload, envelope_json), out_path)


def write_pdf_atomic(data: bytes, out_path: str | Path) -> Path:
    """Write a PDF atomically: temporary file in the same folder, fsync, rename."""
    target = Path(out_path)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


