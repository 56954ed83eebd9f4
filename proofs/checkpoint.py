"""Signed checkpoints in the C2SP tlog-checkpoint / signed-note text format (pure: no Django).

A checkpoint is a signed note whose body is

    <origin>\\n
    <tree size, decimal, no leading zeros>\\n
    <base64 root hash>\\n
    [<extension line>\\n ...]

followed by one blank line and one or more signature lines

    \\u2014 <key name> <base64(4-byte key id || 64-byte Ed25519 signature)>\\n

(U+2014 EM DASH, a space, the key name, a space). Each signature covers the body bytes exactly,
final newline included. Key names, key ids and the vkey format are in `proofs.keys`.

This log adds one extension line to every checkpoint it signs, linking it to the one signed before:

    previous <size> <base64 root>\n

(`previous 0 <base64 SHA-256("")>` on the first). C2SP allows log-defined extension lines and readers
that do not know them ignore them; because the line is under the signature, deleting, reordering or
replaying checkpoint rows breaks the chain visibly (see `previous_link`).

Verification rules (as golang.org/x/mod/sumdb/note `Open`): a signature line whose (name, key id)
matches no known key is ignored, which is what lets a log add a key during rotation; a line that
matches a known key but does not verify is an error (someone altered the note); at least one known
key must verify. Parsing is strict: anything the format does not allow is rejected with a reason.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from proofs.keys import (
    SIGNATURE_SIZE,
    KeyFormatError,
    PublicKey,
    Signer,
    b64decode_strict,
    b64encode,
    check_key_name,
)
from proofs.merkle import HASH_SIZE

# Re-exported: checkpoints and vkeys are published together.
__all__ = [
    "Checkpoint",
    "CheckpointError",
    "NoteSignature",
    "PublicKey",
    "Signer",
    "format_checkpoint_body",
    "parse_checkpoint",
    "parse_note",
    "previous_extension",
    "previous_link",
    "sign_checkpoint",
    "sign_note",
    "verify_checkpoint",
    "verify_note",
]

SIGNATURE_PREFIX = "\u2014 "
MAX_SIGNATURES = 100  # bounds the work an attacker-supplied note can cause (same limit as Go's note)
_SIZE = re.compile(r"^(0|[1-9][0-9]{0,19})$")
PREVIOUS_PREFIX = "previous "


class CheckpointError(ValueError):
    """A checkpoint note is malformed, altered, for another log, or signed by no trusted key."""


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...]
    body: bytes
    signatures: tuple[NoteSignature, ...]
    verified_by: tuple[PublicKey, ...] = ()  # filled by verify_checkpoint only


def _check_line(what: str, line: str) -> None:
    if not line:
        raise CheckpointError(f"{what} must not be empty")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in line):
        raise CheckpointError(f"{what} contains a control character")


def format_checkpoint_body(origin: str, size: int, root: bytes, extensions: Sequence[str] = ()) -> str:
    _check_line("origin", origin)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise CheckpointError("tree size must be a non-negative integer")
    if len(root) != HASH_SIZE:
        raise CheckpointError(f"root must be {HASH_SIZE} bytes")
    for line in extensions:
        _check_line("extension line", line)
    return "".join(f"{line}\n" for line in (origin, str(size), b64encode(root), *extensions))


def sign_note(body: str, signers: Sequence[Signer]) -> str:
    """A signed note: `body` (ending in a newline), a blank line, one signature line per signer."""
    if not signers:
        raise CheckpointError("a note needs at least one signer")
    if not body.endswith("\n") or "\n\n" in body or body.startswith("\n"):
        raise CheckpointError("note text must be non-empty lines, each ending in a newline")
    body_bytes = body.encode("utf-8")
    lines = [
        f"{SIGNATURE_PREFIX}{signer.name} {b64encode(signer.key_id + signer.sign(body_bytes))}\n"
        for signer in signers
    ]
    return body + "\n" + "".join(lines)


def parse_note(text: str | bytes) -> tuple[str, tuple[NoteSignature, ...]]:
    """Split a signed note into its text and signature lines, without verifying anything."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError("note is not UTF-8") from None
    if not isinstance(text, str):
        raise CheckpointError("note must be text")
    if any((ord(ch) < 0x20 and ch != "\n") or ord(ch) == 0x7F for ch in text):
        raise CheckpointError("note contains a control character other than newline")
    split = text.rfind("\n\n")
    if split < 0:
        raise CheckpointError("note has no blank line before its signatures")
    body, signature_block = text[: split + 1], text[split + 2 :]
    if not signature_block:
        raise CheckpointError("note has no signature lines")
    if not signature_block.endswith("\n"):
        raise CheckpointError("note signatures must end with a newline")
    signatures: list[NoteSignature] = []
    for line in signature_block[:-1].split("\n"):
        if not line.startswith(SIGNATURE_PREFIX):
            raise CheckpointError("signature line must start with an em dash and a space")
        parts = line[len(SIGNATURE_PREFIX) :].split(" ")
        if len(parts) != 2:
            raise CheckpointError("signature line must be '\u2014 <name> <base64>'")
        name, encoded = parts
        try:
            check_key_name(name)
            raw = b64decode_strict(encoded, "signature")
        except KeyFormatError as exc:
            raise CheckpointError(f"signature line for {name!r}: {exc}") from None
        # 4-byte key id + Ed25519 signature, or + 8-byte timestamp + signature (a witness's
        # cosignature/v1); other algorithms' lines are carried along and never match a known key.
        if len(raw) not in (4 + SIGNATURE_SIZE, 4 + 8 + SIGNATURE_SIZE):
            raise CheckpointError(
                f"signature line for {name!r}: expected a 4-byte key id and a 64-byte signature "
                "(with an 8-byte timestamp before it for a cosignature)"
            )
        signatures.append(NoteSignature(name=name, key_id=raw[:4], signature=raw[4:]))
        if len(signatures) > MAX_SIGNATURES:
            raise CheckpointError(f"note has more than {MAX_SIGNATURES} signatures")
    return body, tuple(signatures)


def verify_note(text: str | bytes, verifiers: Sequence[PublicKey]) -> tuple[str, tuple[PublicKey, ...]]:
    """The note text and the known keys that signed it; raises CheckpointError.

    Unknown (name, key id) pairs are skipped; a known key whose signature fails is an error.
    """
    body, signatures = parse_note(text)
    body_bytes = body.encode("utf-8")
    verified: list[PublicKey] = []
    for signature in signatures:
        for key in verifiers:
            if key.name != signature.name or key.key_id != signature.key_id:
                continue
            if not key.verify(signature.signature, body_bytes):
                raise CheckpointError(f"signature by {key.key_hint} does not verify: the note was altered")
            if key not in verified:
                verified.append(key)
    if not verified:
        names = ", ".join(f"{s.name}+{s.key_id.hex()}" for s in signatures)
        raise CheckpointError(f"no signature by a trusted key (signed by: {names})")
    return body, tuple(verified)


def sign_checkpoint(
    origin: str, size: int, root: bytes, signers: Sequence[Signer], extensions: Sequence[str] = ()
) -> str:
    """The signed note text; every signer adds one line (several during a key rotation overlap)."""
    return sign_note(format_checkpoint_body(origin, size, root, extensions), signers)


def _parse_body(body: str, signatures: tuple[NoteSignature, ...]) -> Checkpoint:
    lines = body[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError("checkpoint body must have origin, size and root lines")
    origin, size_text, root_text, *extensions = lines
    _check_line("origin", origin)
    if not _SIZE.match(size_text):
        raise CheckpointError("tree size line must be a decimal number without leading zeros")
    try:
        root = b64decode_strict(root_text, "root")
    except KeyFormatError as exc:
        raise CheckpointError(str(exc)) from None
    if len(root) != HASH_SIZE:
        raise CheckpointError(f"root must be {HASH_SIZE} bytes")
    for line in extensions:
        _check_line("extension line", line)
    return Checkpoint(
        origin=origin,
        size=int(size_text),
        root=root,
        extensions=tuple(extensions),
        body=body.encode("utf-8"),
        signatures=signatures,
    )


def parse_checkpoint(text: str | bytes) -> Checkpoint:
    """Parse without verifying any signature."""
    return _parse_body(*parse_note(text))


def verify_checkpoint(text: str | bytes, verifiers: Sequence[PublicKey], *, origin: str) -> Checkpoint:
    """Parse, check the origin, and require a valid signature by at least one of `verifiers`."""
    checkpoint = parse_checkpoint(text)
    if checkpoint.origin != origin:
        raise CheckpointError(f"checkpoint is for log {checkpoint.origin!r}, expected {origin!r}")
    _, verified = verify_note(text, verifiers)
    return Checkpoint(
        origin=checkpoint.origin,
        size=checkpoint.size,
        root=checkpoint.root,
        extensions=checkpoint.extensions,
        body=checkpoint.body,
        signatures=checkpoint.signatures,
        verified_by=verified,
    )


def previous_extension(size: int, root: bytes) -> str:
    """The extension line naming the checkpoint signed before this one (size 0 and the empty root
    for the first)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise CheckpointError("previous tree size must be a non-negative integer")
    if len(root) != HASH_SIZE:
        raise CheckpointError(f"previous root must be {HASH_SIZE} bytes")
    return f"{PREVIOUS_PREFIX}{size} {b64encode(root)}"


def previous_link(checkpoint: Checkpoint) -> tuple[int, bytes] | None:
    """The (size, root) of the previous checkpoint from the `previous` line; None when the note has
    none (signed before the chain existed). Raises CheckpointError when the line is malformed,
    repeated, or does not precede this checkpoint (sizes only grow)."""
    lines = [line for line in checkpoint.extensions if line.startswith(PREVIOUS_PREFIX)]
    if not lines:
        return None
    if len(lines) > 1:
        raise CheckpointError("checkpoint has more than one previous line")
    parts = lines[0][len(PREVIOUS_PREFIX) :].split(" ")
    if len(parts) != 2 or not _SIZE.match(parts[0]):
        raise CheckpointError("previous line must be 'previous <size> <base64 root>'")
    try:
        root = b64decode_strict(parts[1], "previous root")
    except KeyFormatError as exc:
        raise CheckpointError(str(exc)) from None
    if len(root) != HASH_SIZE:
        raise CheckpointError(f"previous root must be {HASH_SIZE} bytes")
    size = int(parts[0])
    if size >= checkpoint.size and checkpoint.size > 0:
        raise CheckpointError(f"previous size {size} is not smaller than the checkpoint's size {checkpoint.size}")
    return size, root
