"""A transparency-log witness (C2SP tlog-witness), run as its own process with its own key and state.

    python -m proofs.witness keygen --name witness.example.org/w1 --out witness.key
    python -m proofs.witness serve --key witness.key --state DIR \\
        --log-vkey <the log's vkey> [--log-vkey ...] [--listen 127.0.0.1:8380]

The service POSTs every new checkpoint to `<prefix>/add-checkpoint` with a consistency proof from the
last checkpoint this witness cosigned. The witness checks the log's signature, that the old size is the
size it holds for that log, the RFC 6962 consistency proof from the root it holds to the new root, and,
for an equal size, that the roots are equal; only then does it store the new checkpoint (atomically,
under a lock, before answering) and return its cosignature. A log that shows it a fork (a different
root at a size it already cosigned, or a shrink, or a tree that does not extend the one it holds) is
refused and the evidence kept in `<state>/evidence/`: the witness never cosigns two views of one log.

Answers (tlog-witness): 200 cosignature lines; 400 malformed request or old size above the new size;
403 no valid signature by a key the witness trusts for that origin; 404 unknown origin; 409 the old
size is not the witness's size (body: that size, Content-Type text/x.tlog.size) or equal sizes with
different roots; 422 the consistency proof does not verify. GET /healthz answers "ok"; GET /vkey the
witness's public key.

The state is one JSON file per log outside the service's database: a database administrator who
rewrites the log cannot rewrite what the witness remembers. Pure: no Django.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from proofs import merkle
from proofs.checkpoint import CheckpointError, parse_checkpoint, verify_note
from proofs.cosignature import WitnessKey
from proofs.keys import KeyFormatError, PublicKey, b64decode_strict, b64encode

logger = logging.getLogger("proofs.witness")

MAX_BODY = 64 * 1024
MAX_PROOF_LINES = 63
SIZE_CONTENT_TYPE = "text/x.tlog.size"


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


def _plain(status: int, message: str) -> Answer:
    return Answer(status, (message.rstrip("\n") + "\n").encode("utf-8"))


@dataclass(frozen=True)
class Request:
    old_size: int
    proof: list[bytes]
    note: bytes


def parse_request(body: bytes) -> Request:
    """`old N` line, base64 proof lines, an empty line, the checkpoint note (tlog-witness)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the request is not UTF-8") from None
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise ValueError("the request has no empty line before the checkpoint")
    lines = head.split("\n")
    first = lines[0]
    if not first.startswith("old "):
        raise ValueError("the request must start with an 'old <size>' line")
    digits = first[4:]
    if not digits.isdigit() or not digits.isascii() or (digits.startswith("0") and digits != "0") or len(digits) > 19:
        raise ValueError("the old size must be a decimal number without leading zeroes")
    proof_lines = lines[1:]
    if len(proof_lines) > MAX_PROOF_LINES:
        raise ValueError(f"at most {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for line in proof_lines:
        try:
            value = b64decode_strict(line, "proof hash")
        except KeyFormatError as exc:
            raise ValueError(str(exc)) from None
        if len(value) != merkle.HASH_SIZE:
            raise ValueError("each proof line must hold a 32-byte hash")
        proof.append(value)
    return Request(int(digits), proof, note.encode("utf-8"))


def format_request(old_size: int, proof: Sequence[bytes], note: str) -> bytes:
    return (f"old {old_size}\n" + "".join(f"{b64encode(h)}\n" for h in proof) + "\n" + note).encode("utf-8")


@dataclass(frozen=True)
class LogState:
    origin: str
    size: int
    root: bytes
    note: str


class StateStore:
    """The latest cosigned checkpoint of each log, one JSON file per origin, written atomically.
    `locked` holds an exclusive file lock (and a thread lock): check-and-update is atomic even with
    several witness processes on one state directory (the race of the spec's section on persistence)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "evidence").mkdir(exist_ok=True)
        self._thread_lock = threading.Lock()

    def _path(self, origin: str) -> Path:
        return self.root / f"{hashlib.sha256(origin.encode('utf-8')).hexdigest()[:32]}.json"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with self._thread_lock, (self.root / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def get(self, origin: str) -> LogState | None:
        path = self._path(origin)
        if not path.exists():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("origin") != origin:
            raise RuntimeError(f"witness state file {path.name} belongs to another origin")
        return LogState(origin, int(data["size"]), b64decode_strict(data["root"], "root"), str(data["note"]))

    def put(self, state: LogState) -> None:
        path = self._path(state.origin)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        data = {"origin": state.origin, "size": state.size, "root": b64encode(state.root), "note": state.note,
                "updated": int(time.time())}
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump(data, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        directory = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def keep_evidence(self, origin: str, reason: str, body: bytes) -> Path:
        """A validly signed request the witness refused: proof that the log misbehaved (or was misused)."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        digest = hashlib.sha256(body).hexdigest()[:16]
        path = self.root / "evidence" / f"{stamp}-{digest}.txt"
        path.write_bytes(f"origin {origin}\nreason {reason}\n\n".encode() + body)
        return path


class Witness:
    def __init__(self, key: WitnessKey, logs: Sequence[PublicKey], state: StateStore, *, clock: object = time.time) -> None:
        self.key = key
        self.logs: dict[str, list[PublicKey]] = {}
        for log_key in logs:  # C2SP: a log's key name is its origin
            self.logs.setdefault(log_key.name, []).append(log_key)
        self.state = state
        self._clock = clock

    def add_checkpoint(self, body: bytes) -> Answer:
        if len(body) > MAX_BODY:
            return _plain(400, f"request larger than {MAX_BODY} bytes")
        try:
            request = parse_request(body)
            checkpoint = parse_checkpoint(request.note)
        except (ValueError, CheckpointError) as exc:
            return _plain(400, f"malformed request: {exc}")
        trusted = self.logs.get(checkpoint.origin)
        if trusted is None:
            return _plain(404, "unknown log origin")
        try:
            verify_note(request.note, trusted)
        except CheckpointError:
            return _plain(403, "no valid signature by a key trusted for this log")
        if request.old_size > checkpoint.size:
            return _plain(400, "the old size is larger than the checkpoint's size")
        if request.old_size == 0 and request.proof:
            return _plain(400, "the consistency proof must be empty when the old size is 0")
        with self.state.locked():
            held = self.state.get(checkpoint.origin)
            held_size = held.size if held else 0
            if request.old_size != held_size:
                if held is not None and checkpoint.size < held.size:
                    self._evidence(checkpoint.origin, f"shrink: {checkpoint.size} after {held.size}", body)
                return Answer(409, f"{held_size}\n".encode(), SIZE_CONTENT_TYPE)
            if held is not None and checkpoint.size == held.size:
                if checkpoint.root != held.root:
                    self._evidence(checkpoint.origin, f"fork at size {held.size}: another root", body)
                    return _plain(409, "a different root at the size already cosigned: the log forked")
            elif held is not None:
                try:
                    merkle.verify_consistency(held.size, checkpoint.size, request.proof, held.root, checkpoint.root)
                except merkle.ProofError as exc:
                    self._evidence(checkpoint.origin, f"not consistent with size {held.size}: {exc}", body)
                    return _plain(422, "the consistency proof does not verify: the log does not extend what was cosigned")
            self.state.put(LogState(checkpoint.origin, checkpoint.size, checkpoint.root, request.note.decode("utf-8")))
            timestamp = int(self._clock())  # type: ignore[operator]
            line = self.key.cosign(checkpoint.body.decode("utf-8"), timestamp)
        logger.info("cosigned %s at size %d", checkpoint.origin, checkpoint.size)
        return Answer(200, line.encode("utf-8"))

    def _evidence(self, origin: str, reason: str, body: bytes) -> None:
        path = self.state.keep_evidence(origin, reason, body)
        logger.error("refused %s: %s (evidence kept in %s)", origin, reason, path)


def make_handler(witness: Witness) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "erasure-witness/1"
        protocol_version = "HTTP/1.1"  # keep-alive, as the spec recommends

        def _send(self, answer: Answer) -> None:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.rstrip("/").rsplit("/", 1)[-1] != "add-checkpoint":
                self._send(_plain(404, "not found"))
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._send(_plain(411, "Content-Length required"))
                return
            if length < 0 or length > MAX_BODY:
                self.close_connection = True
                self._send(_plain(400, f"request larger than {MAX_BODY} bytes"))
                return
            try:
                answer = witness.add_checkpoint(self.rfile.read(length))
            except Exception:  # noqa: BLE001  (never a traceback to the client)
                logger.exception("add-checkpoint failed")
                answer = _plain(500, "internal error")
            self._send(answer)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/healthz":
                self._send(_plain(200, "ok"))
            elif self.path == "/vkey":
                self._send(_plain(200, witness.key.cosigner.to_vkey()))
            else:
                self._send(_plain(404, "not found"))

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            logger.debug("%s " + format, self.address_string(), *args)

    return Handler


def serve(witness: Witness, host: str, port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(witness))
    server.daemon_threads = True
    return server


def _write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(text + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proofs.witness", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    keygen = sub.add_parser("keygen", help="create a witness key; prints its vkey")
    keygen.add_argument("--name", required=True, help="the witness's name, e.g. witness.example.org/w1")
    keygen.add_argument("--out", required=True, type=Path, help="secret key file to create (mode 0600)")
    run = sub.add_parser("serve", help="answer add-checkpoint requests")
    run.add_argument("--key", required=True, type=Path)
    run.add_argument("--state", required=True, type=Path, help="directory for what the witness remembers")
    run.add_argument("--log-vkey", action="append", default=[], help="a trusted log key (repeat for rotation or more logs)")
    run.add_argument("--log-keyring", type=Path, help="the log's published key ring (JSON): trust its current and retired keys")
    run.add_argument("--listen", default="127.0.0.1:8380")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s witness %(levelname)s %(message)s", stream=sys.stderr)
    try:
        if args.command == "keygen":
            if args.out.exists():
                parser.error(f"{args.out} exists: refusing to overwrite a witness key")
            key = WitnessKey.generate(args.name)
            _write_secret(args.out, key.to_secret())
            print(key.cosigner.to_vkey())
            return 0
        key = WitnessKey.load(args.key)
        logs = [PublicKey.from_vkey(v) for v in args.log_vkey]
        if args.log_keyring:
            from proofs.keys import load_keyring

            logs += [entry.public_key for entry in load_keyring(args.log_keyring).entries]
        if not logs:
            parser.error("give at least one --log-vkey or --log-keyring")
        host, _, port = args.listen.rpartition(":")
        witness = Witness(key, logs, StateStore(args.state))
        server = serve(witness, host or "127.0.0.1", int(port))
    except (KeyFormatError, OSError, ValueError) as exc:
        print(f"witness: {exc}", file=sys.stderr)
        return 2
    logger.info("witness %s serving on %s:%d for %s", key.cosigner.key_hint, *server.server_address[:2],
                ", ".join(sorted(witness.logs)))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
