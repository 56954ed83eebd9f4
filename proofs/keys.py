"""Ed25519 keys for the audit log and certificates, in the signed-note formats (pure: no Django).

Formats (golang.org/x/mod/sumdb/note, used by the C2SP signed-note and tlog-checkpoint specs):

- key name: non-empty UTF-8 without whitespace or '+'; this log names its keys by its origin (C2SP),
  e.g. `erasure.example.org/audit-log`;
- key id: the first 4 bytes of SHA-256(name || 0x0A || 0x01 || 32-byte public key), where 0x01
  is the Ed25519 algorithm byte; it binds the name to the key;
- verifier key ("vkey"), safe to publish: `<name>+<8 hex digits key id>+<base64(0x01 || public key)>`;
- signer key, secret: `PRIVATE+KEY+<name>+<8 hex key id>+<base64(0x01 || 32-byte seed)>`.
  A PEM PKCS#8 Ed25519 key is accepted too, with the name given separately.

Key ring (`KeyRing`): the published list of a log's public keys, as JSON:

    {"keys": [{"vkey": "<vkey>", "status": "current", "retired_at": null},
              {"vkey": "<vkey>", "status": "retired", "retired_at": "2025-06-30T00:00:00.000000Z"}]}

Rotation: the log origin never changes; a new key is added as `current` and for an overlap period
both current keys sign every checkpoint (a note carries several signature lines); then the old key
is marked `retired` with the time it stopped signing. Retired keys stay published forever so that
old checkpoints and certificates keep verifying; a retired key is trusted only for statements
dated no later than its `retired_at`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from proofs.canonical import loads_limited, parse_rfc3339_utc, rfc3339_utc

ALG_ED25519 = 0x01
SIGNATURE_SIZE = 64
KEY_SIZE = 32
PRIVATE_PREFIX = "PRIVATE+KEY+"


class KeyFormatError(ValueError):
    """A key, key name or key ring is malformed. Messages never contain secret material."""


def b64decode_strict(text: str, what: str) -> bytes:
    """Standard base64 with padding, rejecting any other spelling of the same bytes.

    `binascii` ignores the unused low bits of the last character, so two strings can decode to the
    same bytes; re-encoding and comparing makes every character of a signed value significant.
    """
    if not isinstance(text, str):
        raise KeyFormatError(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KeyFormatError(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise KeyFormatError(f"{what} is not canonical base64")
    return raw


def b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def split_key_text(text: str, *, what: str, alg: int, alg_name: str) -> tuple[str, str, bytes]:
    """(name, hex key id, 32-byte key material) of `<name>+<hex key id>+base64(alg || material)`,
    the signed-note spelling of a public key (vkey) and, after `PRIVATE+KEY+`, of a secret one.
    The key id is the caller's to check: it depends on what the key signs."""
    if not isinstance(text, str):
        raise KeyFormatError(f"{what} must be a string")
    # maxsplit: the base64 part may itself contain "+".
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise KeyFormatError(f"{what} must look like <name>+<hex key id>+<base64 key>")
    name, hex_id, encoded = parts
    check_key_name(name)
    raw = b64decode_strict(encoded, what)
    if len(raw) != KEY_SIZE + 1 or raw[0] != alg:
        raise KeyFormatError(f"{what} must hold {alg_name} (0x{alg:02x} followed by 32 bytes)")
    return name, hex_id, raw[1:]


def join_key_text(name: str, key_id: bytes, alg: int, material: bytes) -> str:
    return f"{name}+{key_id.hex()}+{b64encode(bytes([alg]) + material)}"


def check_key_name(name: str) -> str:
    """Key names as the note format allows them: non-empty, printable, no whitespace, no '+'."""
    if not isinstance(name, str) or not name:
        raise KeyFormatError("key name must be a non-empty string")
    if "+" in name or any(ch.isspace() or not ch.isprintable() for ch in name):
        raise KeyFormatError("key name must not contain '+', whitespace or control characters")
    return name


def key_id(name: str, public_key: bytes, alg: int = ALG_ED25519) -> bytes:
    """First 4 bytes of SHA-256(name || '\\n' || alg || public key): 0x01 for a note signer, 0x04 for a
    witness's cosignature/v1 key."""
    check_key_name(name)
    if len(public_key) != KEY_SIZE:
        raise KeyFormatError("Ed25519 public keys are 32 bytes")
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([alg]) + public_key).digest()[:4]


@dataclass(frozen=True)
class NamedKey:
    """A named Ed25519 public key in the signed-note formats; subclasses say what it signs (`ALG`)."""

    ALG: ClassVar[int] = ALG_ED25519
    WHAT: ClassVar[str] = "vkey"
    ALG_NAME: ClassVar[str] = "an Ed25519 key"

    name: str
    key: bytes  # raw 32-byte public key

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if not isinstance(self.key, bytes) or len(self.key) != KEY_SIZE:
            raise KeyFormatError("Ed25519 public keys are 32 raw bytes")

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.key, self.ALG)

    @property
    def key_hint(self) -> str:
        """`<name>+<hex key id>`: the vkey prefix, used as the DSSE keyid."""
        return f"{self.name}+{self.key_id.hex()}"

    def to_vkey(self) -> str:
        return join_key_text(self.name, self.key_id, self.ALG, self.key)

    @classmethod
    def from_vkey(cls, text: str) -> Self:
        """Parse `<name>+<hex key id>+<base64(alg || key)>`, checking the key id."""
        name, hex_id, material = split_key_text(text, what=cls.WHAT, alg=cls.ALG, alg_name=cls.ALG_NAME)
        key = cls(name=name, key=material)
        if hex_id != key.key_id.hex():
            raise KeyFormatError(f"{cls.WHAT} {name}: key id {hex_id} does not match the key")
        return key


@dataclass(frozen=True)
class PublicKey(NamedKey):
    """A named Ed25519 verifier key (a note signer's: the log's)."""

    def verify(self, signature: bytes, message: bytes) -> bool:
        if len(signature) != SIGNATURE_SIZE:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


class Signer:
    """A named Ed25519 signing key. `repr` never shows the secret."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self.name = check_key_name(name)
        self._private_key = private_key
        raw_public = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public_key = PublicKey(name=name, key=raw_public)

    def __repr__(self) -> str:
        return f"Signer({self.public_key.key_hint!r})"

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> Signer:
        if len(seed) != KEY_SIZE:
            raise KeyFormatError("Ed25519 seeds are 32 bytes")
        return cls(name, Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def generate(cls, name: str) -> Signer:
        return cls(name, Ed25519PrivateKey.generate())

    @property
    def key_id(self) -> bytes:
        return self.public_key.key_id

    def sign(self, message: bytes) -> bytes:
        return self._private_key.sign(message)

    def to_signer_key(self) -> str:
        """The note signer-key text. Secret: write it only to a 0600 file or a secret store."""
        seed = self._private_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return PRIVATE_PREFIX + join_key_text(self.name, self.key_id, ALG_ED25519, seed)


def parse_signer_key(text: str, name: str | None = None, password: bytes | None = None) -> Signer:
    """A Signer from note signer-key text or from PEM PKCS#8 (which needs `name`).

    With the note format, `name`, when given, must equal the name inside the key.
    """
    text = text.strip()
    if text.startswith(PRIVATE_PREFIX):
        key_name, hex_id, seed = split_key_text(
            text[len(PRIVATE_PREFIX) :], what="signer key", alg=ALG_ED25519, alg_name="an Ed25519 seed"
        )
        if name is not None and name != key_name:
            raise KeyFormatError(f"signer key is named {key_name!r}, expected {name!r}")
        signer = Signer.from_seed(key_name, seed)
        if signer.key_id.hex() != hex_id:
            raise KeyFormatError(f"signer key {key_name}: key id {hex_id} does not match the key")
        return signer
    if text.startswith("-----BEGIN"):
        if name is None:
            raise KeyFormatError("a PEM key carries no name: pass the key name")
        try:
            private_key = serialization.load_pem_private_key(text.encode("ascii"), password=password)
        except (ValueError, TypeError):
            raise KeyFormatError("PEM private key could not be loaded (wrong format or password)") from None
        if not isinstance(private_key, Ed25519PrivateKey):
            raise KeyFormatError("PEM private key is not an Ed25519 key")
        return Signer(name, private_key)
    raise KeyFormatError("unrecognised signer key: expected PRIVATE+KEY+... or a PEM PKCS#8 key")


def load_signer(path: str | Path, name: str | None = None, password: bytes | None = None) -> Signer:
    """Read a signing key file (note signer-key or PEM PKCS#8)."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except UnicodeDecodeError:
        raise KeyFormatError(f"key file {path} is not ASCII text") from None
    return parse_signer_key(text, name=name, password=password)


def signer_to_pem(signer_key_text: str) -> bytes:
    """PEM PKCS#8 for a note signer key (for tools that want PEM)."""
    signer = parse_signer_key(signer_key_text)
    return signer._private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def generate_key(name: str) -> tuple[str, str]:
    """A fresh key: (secret signer-key text, public vkey text)."""
    signer = Signer.generate(name)
    return signer.to_signer_key(), signer.public_key.to_vkey()


# --- key ring -------------------------------------------------------------------------------------

KeyStatus = Literal["current", "retired"]


@dataclass(frozen=True)
class KeyRingEntry:
    public_key: PublicKey
    status: KeyStatus
    retired_at: datetime | None = None  # UTC; set exactly when status is "retired"

    def __post_init__(self) -> None:
        if self.status not in ("current", "retired"):
            raise KeyFormatError(f"key status must be current or retired, not {self.status!r}")
        if (self.status == "retired") != (self.retired_at is not None):
            raise KeyFormatError("retired_at is required for retired keys and forbidden for current ones")

    def trusted_at(self, moment: datetime | None) -> bool:
        """Whether a statement dated `moment` may rely on this key (retired keys: not after retired_at)."""
        if self.retired_at is None:
            return True
        return moment is not None and moment <= self.retired_at

    def to_json(self) -> dict[str, Any]:
        return {
            "vkey": self.public_key.to_vkey(),
            "status": self.status,
            "retired_at": rfc3339_utc(self.retired_at) if self.retired_at else None,
        }

    @classmethod
    def from_json(cls, item: Any) -> KeyRingEntry:
        if not isinstance(item, dict) or set(item) - {"vkey", "status", "retired_at"} or "vkey" not in item:
            raise KeyFormatError("key ring entries are objects with vkey, status and retired_at")
        retired_raw = item.get("retired_at")
        try:
            retired_at = parse_rfc3339_utc(retired_raw) if retired_raw is not None else None
        except ValueError as exc:
            raise KeyFormatError(f"retired_at: {exc}") from None
        return cls(
            public_key=PublicKey.from_vkey(item["vkey"]),
            status=item.get("status", "current"),
            retired_at=retired_at,
        )


@dataclass(frozen=True)
class KeyRing:
    """Current and retired public keys of one log; no two entries share a name and key id."""

    entries: tuple[KeyRingEntry, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        seen: set[tuple[str, bytes]] = set()
        for entry in self.entries:
            ident = (entry.public_key.name, entry.public_key.key_id)
            if ident in seen:
                raise KeyFormatError(f"key ring lists {entry.public_key.key_hint} twice")
            seen.add(ident)

    @classmethod
    def of(cls, keys: Iterable[PublicKey | str]) -> KeyRing:
        """A ring of current keys (vkey strings or PublicKey objects), e.g. one pinned `--key`."""
        return cls(
            tuple(KeyRingEntry(PublicKey.from_vkey(k) if isinstance(k, str) else k, "current") for k in keys)
        )

    @classmethod
    def from_json(cls, data: bytes | str | dict[str, Any] | list[Any]) -> KeyRing:
        """Accepts {"keys": [...]} or the bare list (the certificate's `audit.public_keys`)."""
        if isinstance(data, bytes | str):
            try:
                data = loads_limited(data)
            except (ValueError, UnicodeDecodeError):  # malformed, or beyond the limits (JSONLimitError)
                raise KeyFormatError("key ring is not JSON within the verifier's limits") from None
        items = data.get("keys") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise KeyFormatError('key ring must be {"keys": [...]} or a list')
        return cls(tuple(KeyRingEntry.from_json(item) for item in items))

    def to_json(self) -> dict[str, Any]:
        return {"keys": [entry.to_json() for entry in self.entries]}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    def public_keys(self) -> list[PublicKey]:
        """Every key, current and retired (verifiers of old checkpoints need the retired ones)."""
        return [entry.public_key for entry in self.entries]

    def current(self) -> list[PublicKey]:
        return [entry.public_key for entry in self.entries if entry.status == "current"]

    def find(self, name: str, kid: bytes) -> KeyRingEntry | None:
        for entry in self.entries:
            if entry.public_key.name == name and entry.public_key.key_id == kid:
                return entry
        return None

    def find_hint(self, hint: str) -> KeyRingEntry | None:
        """Look up `<name>+<hex key id>` (a DSSE keyid)."""
        for entry in self.entries:
            if entry.public_key.key_hint == hint:
                return entry
        return None

    def entry_for(self, key: PublicKey) -> KeyRingEntry | None:
        """The entry holding exactly this name and key bytes."""
        for entry in self.entries:
            if entry.public_key == key:
                return entry
        return None

    def with_new_current(self, key: PublicKey) -> KeyRing:
        """Start a rotation: add `key` as current; existing current keys keep signing (overlap)."""
        return KeyRing((*self.entries, KeyRingEntry(key, "current")))

    def retire(self, key: PublicKey, at: datetime) -> KeyRing:
        """End the overlap for `key`: it stays published, trusted for statements up to `at`."""
        if self.entry_for(key) is None:
            raise KeyFormatError(f"{key.key_hint} is not in the key ring")
        if at.tzinfo is None:
            raise KeyFormatError("retired_at must be timezone-aware")
        entries = tuple(
            KeyRingEntry(e.public_key, "retired", parse_rfc3339_utc(rfc3339_utc(at)))
            if e.public_key == key
            else e
            for e in self.entries
        )
        if not any(e.status == "current" for e in entries):
            raise KeyFormatError("retiring this key would leave the log without a current key")
        return KeyRing(entries)


def load_keyring(path: str | Path) -> KeyRing:
    return KeyRing.from_json(Path(path).read_bytes())


def signers_match_keyring(signers: Sequence[Signer], ring: KeyRing) -> None:
    """Refuse to sign with a key that the published ring does not list as current."""
    current = ring.current()
    for signer in signers:
        if signer.public_key not in current:
            raise KeyFormatError(f"signer {signer.public_key.key_hint} is not a current key of the ring")
