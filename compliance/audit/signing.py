"""The log's signing keys (from a file or secret, never from the database) and its published key ring.

AUDIT_SIGNING_KEY_FILE holds one signer key per line (`PRIVATE+KEY+<name>+<hex id>+<base64>`); during a
rotation it holds two and both sign each checkpoint. AUDIT_KEYRING_FILE is the published ring: every
current and retired public key, served at /audit/keys/ and copied into certificates.
In the embedded set-up a first key is generated on first use; production refuses to start signing
without both files.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from django.conf import settings

from proofs.keys import (
    KeyRing,
    PublicKey,
    Signer,
    generate_key,
    parse_signer_key,
    signers_match_keyring,
)


class SigningKeyMissing(RuntimeError):
    """The audit signing key or the published key ring is not where the settings say."""


def _atomic_write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def key_name() -> str:
    """The name of every key this service creates: the log origin (C2SP tlog-checkpoint: a log's
    checkpoint key is named by its origin, so a verifier finds the key from the note's first line).

    Keys made before this rule were named by the origin's host part alone. They keep signing until
    rotated (`audit_keygen --rotate`, then `--retire`) and stay published, so what they signed keeps
    verifying: a note's signature line names its key, and verifiers match name and key id.
    """
    return settings.AUDIT_LOG_ORIGIN


def keys_not_named_by_origin() -> list[PublicKey]:
    """Current keys whose name is not the origin (made before key name = origin): rotate them."""
    return [key for key in keyring().current() if key.name != key_name()]


def ensure_keys(*, create_in_production: bool = False) -> None:
    """Create the first key pair and ring if they do not exist yet: on first use in the embedded
    set-up; in production only when an operator asks (`manage.py audit_keygen`, which the compose
    stack's one-shot `migrate` service runs)."""
    key_file, ring_file = Path(settings.AUDIT_SIGNING_KEY_FILE), Path(settings.AUDIT_KEYRING_FILE)
    if key_file.exists() and ring_file.exists():
        return
    if settings.PRODUCTION and not create_in_production:
        raise SigningKeyMissing(
            "AUDIT_SIGNING_KEY_FILE and AUDIT_KEYRING_FILE must exist in production (create them with manage.py audit_keygen)"
        )
    if key_file.exists() != ring_file.exists():
        raise SigningKeyMissing("only one of the audit signing key and key ring files exists; restore the other")
    private_text, vkey = generate_key(key_name())
    _atomic_write(key_file, private_text + "\n", 0o600)
    _atomic_write(ring_file, KeyRing.of([vkey]).dumps(), 0o644)


def current_signers() -> list[Signer]:
    ensure_keys()
    lines = [line.strip() for line in Path(settings.AUDIT_SIGNING_KEY_FILE).read_text(encoding="utf-8").splitlines()]
    signers = [parse_signer_key(line) for line in lines if line]
    if not signers:
        raise SigningKeyMissing("the audit signing key file holds no key")
    signers_match_keyring(signers, keyring())
    return signers


def keyring() -> KeyRing:
    ensure_keys()
    return KeyRing.from_json(Path(settings.AUDIT_KEYRING_FILE).read_bytes())


def published_verifiers() -> list[PublicKey]:
    return keyring().public_keys()


def rotate_start() -> PublicKey:
    """Add a new key: it joins the ring as current and signs alongside the old one (overlap)."""
    private_text, vkey = generate_key(key_name())
    new_key = PublicKey.from_vkey(vkey)
    ring = keyring().with_new_current(new_key)
    existing = Path(settings.AUDIT_SIGNING_KEY_FILE).read_text(encoding="utf-8")
    # Ring first: a key may only sign once it is published.
    _atomic_write(Path(settings.AUDIT_KEYRING_FILE), ring.dumps(), 0o644)
    _atomic_write(Path(settings.AUDIT_SIGNING_KEY_FILE), existing.rstrip("\n") + "\n" + private_text + "\n", 0o600)
    return new_key


def rotate_finish(hint: str) -> None:
    """Retire the key `<name>+<hex id>`: it stops signing but stays published."""
    from django.utils import timezone

    ring = keyring()
    entry = ring.find_hint(hint)
    if entry is None:
        raise ValueError(f"no key {hint} in the key ring")
    signers = [s for s in current_signers() if s.public_key != entry.public_key]
    if not signers:
        raise ValueError("cannot retire the only signing key; start a rotation first")
    _atomic_write(Path(settings.AUDIT_SIGNING_KEY_FILE), "".join(s.to_signer_key() + "\n" for s in signers), 0o600)
    _atomic_write(Path(settings.AUDIT_KEYRING_FILE), ring.retire(entry.public_key, timezone.now()).dumps(), 0o644)


# --- the signed head, kept outside the database -----------------------------------------------------
#
# Checkpoint rows live in the database, so a database administrator can delete the newest ones (and
# truncate the log back to an older one) without breaking any signature. The signer therefore keeps
# the newest checkpoint it signed in AUDIT_SIGNED_HEAD_FILE, next to its key and out of the database's
# reach: it refuses to sign a log that no longer contains that checkpoint, and audit_verify checks the
# database against it. The file only ever moves forward (a smaller size is never written over a larger).


def signed_head_path() -> Path:
    return Path(settings.AUDIT_SIGNED_HEAD_FILE)


def read_signed_head() -> str | None:
    """The newest checkpoint note this service recorded, or None when there is no record yet."""
    path = signed_head_path()
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def record_signed_head(note: str, size: int) -> None:
    """Keep `note` as the newest signed checkpoint unless the record already holds a larger one.

    Called after the checkpoint row commits (a rolled-back checkpoint must not be recorded). Two
    signers finishing out of order could both read before either writes; the later write then holds
    the smaller size, which only weakens the record to an older, still valid checkpoint.
    """
    from proofs.checkpoint import CheckpointError, parse_checkpoint

    existing = read_signed_head()
    if existing is not None:
        try:
            if parse_checkpoint(existing).size >= size:
                return
        except CheckpointError:
            pass  # an unreadable record is replaced; audit_verify reports it before that happens
    _atomic_write(signed_head_path(), note, 0o644)
