"""The human-readable certificate: what its PDF states, and how (pure: no Django). The facts below are
drawn by proofs.pdf_render and read back from a signed PDF by the verifier (`printed_facts`).

The PDF is a rendering, not the evidence: the evidence is the DSSE envelope embedded as the file
attachment `certificate.json`, which `erasure-verify certificate.pdf --keyring ... --pdf-cert ...`
extracts and checks. Everything printed comes from the signed payload, and the renderer
(pdf_render.py) refuses an envelope whose payload is not exactly the payload being rendered. The service then signs the whole
PDF (`pdfsign.py`), and the verifier checks that the printed key facts (`printed_facts`) are the
statement's.

Fonts: only the standard PDF fonts that reportlab ships (Helvetica, Courier), which use
WinAnsi (cp1252) encoding. That covers the em dash and Western European text; any other character is
printed as '?' (the embedded JSON keeps the exact text).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any, NamedTuple
from xml.sax.saxutils import escape

from proofs.canonical import parse_rfc3339_utc

ATTACHMENT_NAME = "certificate.json"


def markup_text(value: Any) -> str:
    """Escape for reportlab's mini-XML and keep only what WinAnsi fonts can draw."""
    text = "" if value is None else str(value)
    text = "".join(ch if encodable(ch) else "?" for ch in text)
    return escape(text)


def plain(text: str) -> str:
    """Canvas strings are not markup: only the WinAnsi filter applies."""
    return "".join(ch if encodable(ch) else "?" for ch in text)


def encodable(ch: str) -> bool:
    try:
        ch.encode("cp1252")
    except UnicodeEncodeError:
        return False
    return True


def _when(value: str | None) -> str:
    if value is None:
        return "\u2014"
    return parse_rfc3339_utc(value).strftime("%d %b %Y, %H:%M UTC")


def short_digest(digest: str) -> str:
    return f"{digest[:16]}\u2026{digest[-8:]}"


NOT_MEASURED = "-"  # a null value: the attack did not run on the base model, or no figure was recorded

CONTROL_SOURCE_TEXT = {"held-out": "held out from training", "generated": "generated (fictitious)"}


def figure_text(value: str | None) -> str:
    return NOT_MEASURED if value is None else value


def _listed(items: Sequence[str]) -> str:
    return ", ".join(items) if items else "none recorded"


def threat_model_facts(threat_model: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, plain text) lines of a v2 threat model, in reading order."""
    control = threat_model["control"]
    people = control["people"]
    control_text = "none recorded"
    if control["source"] in CONTROL_SOURCE_TEXT:
        who = "person" if people == 1 else "people"
        control_text = f"{people} {who} the model never saw, {CONTROL_SOURCE_TEXT[control['source']]}"
    sampling, candidates = threat_model["sampling_budget"], threat_model["rank_candidates"]
    return [
        ("Attack families", _listed(threat_model["families"])),
        ("Stronger retries", f"up to {threat_model['retries']} per attack while it found nothing"),
        ("Sampling budget", NOT_MEASURED if sampling is None else f"{sampling} samples per prompt"),
        (
            "Candidates ranked",
            NOT_MEASURED if candidates is None else f"true value among {candidates} candidates",
        ),
        ("Relearning settings", _listed(threat_model["relearning_settings"])),
        *_relearning_data(threat_model),
        ("Quantization levels", _listed(threat_model["quantization_levels"])),
        ("Never-seen control", control_text),
    ]


def _relearning_data(threat_model: dict[str, Any]) -> list[tuple[str, str]]:
    """v5: what the relearning attacker fine-tuned on ("Relearning data"); nothing for older schemas."""
    data = threat_model.get("relearning_data")
    if not isinstance(data, dict):
        return []
    texts, corpus = data.get("texts"), data.get("corpus_texts")
    if texts is None:
        return [("Relearning data", NOT_MEASURED)]
    text = f"{texts} text{'s' if texts != 1 else ''} without the subjects"
    if corpus is not None:
        text += f", {corpus} of them from the training corpus"
    return [("Relearning data", text)]


class Fact(NamedTuple):
    label: str
    text: str
    mono: bool = False  # a hash: set in a fixed-width face


def exact_facts(unlearning: dict[str, Any]) -> list[Fact]:
    """The "Exact erasure" lines of a v3 `unlearning` whose `exact` is not null (PDF and web page)."""
    exact = unlearning["exact"]
    shards = exact["shards"]
    retrained = [str(row["index"]) for row in shards if row["retrained_from_slice"] is not None]
    approximate = unlearning["method"].partition("+")[2]
    method = f"{exact['method']}: the shard adapters that held the records were retrained without them"
    if approximate:
        method += f"; then {approximate} for the records in other training data"
    removed = len(exact["removed"])
    return [
        Fact("Method", method),
        Fact(
            "Shards retrained",
            f"{len(retrained)} of {len(shards)}"
            + (f" (shard{'s' if len(retrained) > 1 else ''} {', '.join(retrained)})" if retrained else ""),
        ),
        Fact("Slices retrained", f"{exact['retrained_slices']} of {exact['total_slices']}"),
        Fact(
            "Records proven absent",
            f"{removed} record{'' if removed == 1 else 's'}, from the training data of every shard",
        ),
        Fact("Recipe SHA-256", exact["recipe_sha256"], mono=True),
        Fact("Corpus before", exact["corpus_before_sha256"], mono=True),
        Fact("Corpus after", exact["corpus_after_sha256"], mono=True),
    ]


def summary_facts(payload: dict[str, Any]) -> list[Fact]:
    """The first page's left column: who, which request, which certificate, when issued."""
    request = payload["request"]
    decision = request["decision"] + (f" ({request['legal_code']})" if request["legal_code"] else "")
    return [
        Fact("Request reference", request["reference"]),
        Fact("Certificate", payload["certificate_id"]),
        Fact("Subject reference", request["subject_ref"], mono=True),
        Fact("Legal ground", request["ground"]),
        Fact("Decision", decision),
        Fact("Issued", _when(payload["issued_at"])),
        *retention_facts(payload),
    ]


def retention_facts(payload: dict[str, Any]) -> list[Fact]:
    """v4: when the service's copy of the person's data is destroyed, and from when no copy decrypts."""
    retention = payload.get("retention")
    if not isinstance(retention, dict):
        return []
    return [
        Fact("Data destroyed by", retention["purge_by"]),
        Fact("No copy readable after", retention["no_copy_decryptable_after"]),
    ]


def timeline_facts(payload: dict[str, Any]) -> list[Fact]:
    """The first page's right column: the request's dates."""
    timeline = payload["timeline"]
    return [
        Fact("Received", _when(timeline["received"])),
        Fact("Identity verified", _when(timeline["verified"])),
        Fact("Approved", _when(timeline["approved"])),
        Fact("Completed", _when(timeline["completed"])),
    ]


def verdict_text(verification: dict[str, Any]) -> str:
    return f"Verdict: {'PASS' if verification['verdict'] == 'pass' else 'FAIL'}"


# --- what a reader sees must be what the statement says ----------------------------------------------
#
# A signed PDF is checked against its embedded statement by the text a reader sees. The labels and value
# formats below are therefore part of the verifiable format: a signed certificate in the field is
# checked against them, so change them only together with a check that still accepts the old layout.

MAX_PRINTED_PAGES = 50  # a certificate has 1-3 pages; more is not a certificate, and costs time to extract


class PrintedFact(NamedTuple):
    what: str  # named in a disagreement, e.g. "request reference"
    text: str  # as printed, label and value; compared with all white space removed


def _versions_fact(kind: str, name: str, row: dict[str, Any], *extra: str) -> PrintedFact:
    """A model's or corpus's row of the versions table as printed: name, before and after (version and
    short hash), then any extra cells."""
    cells = [plain(name), plain(row["before"]["version"]), short_digest(row["before"]["sha256"]),
             plain(row["after"]["version"]), short_digest(row["after"]["sha256"]), *extra]  # fmt: skip
    return PrintedFact(f"{kind} {plain(name)} versions", " ".join(cells))


def printed_facts(payload: dict[str, Any]) -> list[PrintedFact]:
    """What the page must show for the statement `payload`: the key facts, each label next to its value."""
    named = {"Certificate": "certificate id", "Issued": "issue date"}
    facts = [
        PrintedFact(named.get(f.label, f.label.lower()), f"{f.label} {plain(f.text)}") for f in summary_facts(payload)
    ]
    facts += [PrintedFact(f"{f.label.lower()} date", f"{f.label} {plain(f.text)}") for f in timeline_facts(payload)]
    facts += [_versions_fact("model", m["model"], m) for m in payload["models"]]
    facts += [_versions_fact("corpus", c["corpus"], c, str(c["records_removed"])) for c in payload["corpora"]]
    facts.append(PrintedFact("verdict", verdict_text(payload["verification"])))
    return facts


def printed_text(data: bytes) -> str:
    """The text of every page as a reader shows it (pypdf's extraction, in content-stream order)."""
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    if len(reader.pages) > MAX_PRINTED_PAGES:
        raise ValueError(f"the PDF has {len(reader.pages)} pages; a certificate has at most {MAX_PRINTED_PAGES}")
    return "\n".join(page.extract_text() or "" for page in reader.pages)


def _squeezed(text: str) -> str:
    # Without white space: a long value wraps differently in another reportlab version or font metric.
    return "".join(text.split())


def printed_disagreements(text: str, payload: dict[str, Any]) -> list[str]:
    """How the printed `text` disagrees with the statement: each key fact it does not show, and a
    verdict other than the statement's. Empty when they agree."""
    printed = _squeezed(text)
    problems = [
        f"it does not show the statement's {fact.what} ({fact.text!r})"
        for fact in printed_facts(payload)
        if _squeezed(fact.text) not in printed
    ]
    stated = payload["verification"]["verdict"]
    other = verdict_text({"verdict": "fail" if stated == "pass" else "pass"})
    if _squeezed(other) in printed:
        problems.append(f"it shows {other!r} but the statement's verdict is {stated}")
    return problems


