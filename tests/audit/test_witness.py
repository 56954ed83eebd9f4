"""The witness (C2SP tlog-witness + tlog-cosignature): the protocol, its HTTP face, its command, and the
service's client: every checkpoint cosigned, forks refused and alerted, certificates gated on a quorum."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from proofs import cosignature, merkle
from proofs.checkpoint import CheckpointError, sign_checkpoint
from proofs.cosignature import Cosigner, WitnessKey, verify_cosignatures
from proofs.keys import Signer
from proofs.witness import (
    SIZE_CONTENT_TYPE,
    LogState,
    StateStore,
    Witness,
    format_request,
    serve,
)

ROOT = Path(__file__).resolve().parents[2]
ORIGIN = "log.example.org/audit"


class Log:
    """An honest log in memory: leaves, checkpoints signed by its key, proofs."""

    def __init__(self, signer: Signer | None = None, origin: str = ORIGIN, seed: str = "a") -> None:
        self.signer = signer or Signer.generate(origin)
        self.origin = origin
        self.seed = seed
        self.store = merkle.InMemoryNodeStore()

    def grow(self, to: int) -> None:
        while self.store.size < to:
            self.store.append(merkle.leaf_hash(f"{self.seed}-{self.store.size}".encode()))

    def note(self, size: int | None = None) -> str:
        size = self.store.size if size is None else size
        return sign_checkpoint(self.origin, size, merkle.tree_root(size, self.store), [self.signer])

    def request(self, old: int, size: int | None = None) -> bytes:
        size = self.store.size if size is None else size
        proof = merkle.consistency_proof(old, size, self.store) if 0 < old < size else []
        return format_request(old, proof, self.note(size))


@pytest.fixture
def witness_key() -> WitnessKey:
    return WitnessKey.generate("witness.example.org/w1")


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def witness(witness_key: WitnessKey, log: Log, tmp_path: Path) -> Witness:
    return Witness(witness_key, [log.signer.public_key], StateStore(tmp_path / "state"), clock=lambda: 1_700_000_000)


def _cosigned(note: str, answer_body: bytes, key: WitnessKey) -> list[Any]:
    return verify_cosignatures(cosignature.add_cosignatures(note, answer_body.decode().splitlines()), [key.cosigner])


# --- the protocol ----------------------------------------------------------------------------------------


def test_first_checkpoint_is_cosigned_and_the_cosignature_verifies(witness: Witness, log: Log, witness_key: WitnessKey) -> None:
    log.grow(5)
    answer = witness.add_checkpoint(log.request(0))
    assert answer.status == 200 and answer.body.decode().startswith("\u2014 witness.example.org/w1 ")
    found = _cosigned(log.note(), answer.body, witness_key)
    assert [(c.cosigner, c.timestamp) for c in found] == [(witness_key.cosigner, 1_700_000_000)]


def test_a_growing_log_is_cosigned_with_consistency_proofs(witness: Witness, log: Log) -> None:
    held = 0
    for size in (1, 2, 7, 8, 33, 100):
        log.grow(size)
        assert witness.add_checkpoint(log.request(held)).status == 200
        held = size
    state = witness.state.get(ORIGIN)
    assert state is not None and state.size == 100 and state.root == log.store.root()


def test_the_same_checkpoint_again_is_cosigned_again(witness: Witness, log: Log) -> None:
    log.grow(4)
    assert witness.add_checkpoint(log.request(0)).status == 200
    assert witness.add_checkpoint(log.request(4)).status == 200


def test_a_stale_old_size_gets_409_with_the_witness_size(witness: Witness, log: Log) -> None:
    log.grow(4)
    witness.add_checkpoint(log.request(0))
    log.grow(9)
    answer = witness.add_checkpoint(log.request(0))
    assert (answer.status, answer.content_type, answer.body) == (409, SIZE_CONTENT_TYPE, b"4\n")


def test_a_fork_at_a_cosigned_size_is_refused_and_the_evidence_kept(witness: Witness, log: Log, witness_key: WitnessKey) -> None:
    log.grow(6)
    witness.add_checkpoint(log.request(0))
    fork = Log(signer=log.signer, seed="b")  # same key, other leaves: a second view of the log
    fork.grow(6)
    answer = witness.add_checkpoint(fork.request(6))
    assert answer.status == 409 and b"forked" in answer.body
    assert len(list((witness.state.root / "evidence").iterdir())) == 1
    assert witness.state.get(ORIGIN).root == log.store.root()  # type: ignore[union-attr]


def test_a_log_that_does_not_extend_the_cosigned_one_gets_422(witness: Witness, log: Log) -> None:
    log.grow(6)
    witness.add_checkpoint(log.request(0))
    fork = Log(signer=log.signer, seed="b")
    fork.grow(10)
    answer = witness.add_checkpoint(fork.request(6))
    assert answer.status == 422
    assert witness.state.get(ORIGIN).size == 6  # type: ignore[union-attr]


def test_a_shrunken_log_is_refused_and_the_evidence_kept(witness: Witness, log: Log) -> None:
    log.grow(10)
    witness.add_checkpoint(log.request(0))
    answer = witness.add_checkpoint(log.request(5, size=5))
    assert answer.status == 409 and answer.body == b"10\n"
    assert len(list((witness.state.root / "evidence").iterdir())) == 1


@pytest.mark.parametrize(
    ("make", "status", "says"),
    [
        (lambda log: b"old 0\n", 400, b"malformed"),
        (lambda log: b"new 0\n\n" + log.note().encode(), 400, b"old"),
        (lambda log: b"old 01\n\n" + log.note().encode(), 400, b"leading zeroes"),
        (lambda log: b"old 0\nAAAA\n\n" + log.note().encode(), 400, b"32-byte"),
        (lambda log: format_request(0, [b"\0" * 32], log.note()), 400, b"empty"),
        (lambda log: format_request(9, [], log.note()), 400, b"larger"),
        (lambda log: Log(origin="other.example.org/log").request(0), 404, b"unknown"),
        (lambda log: Log(origin=ORIGIN).request(0), 403, b"no valid signature"),
        (lambda log: b"\xff\xfe", 400, b"UTF-8"),
        (lambda log: b"x" * 70_000, 400, b"larger than"),
    ],
)
def test_bad_requests_get_a_clear_status_and_change_nothing(
    witness: Witness, log: Log, make: Callable[[Log], bytes], status: int, says: bytes
) -> None:
    log.grow(3)
    answer = witness.add_checkpoint(make(log))
    assert answer.status == status and says in answer.body
    assert witness.state.get(ORIGIN) is None


def test_the_state_survives_a_restart(witness_key: WitnessKey, log: Log, tmp_path: Path) -> None:
    log.grow(3)
    Witness(witness_key, [log.signer.public_key], StateStore(tmp_path / "s")).add_checkpoint(log.request(0))
    again = Witness(witness_key, [log.signer.public_key], StateStore(tmp_path / "s"))
    log.grow(5)
    assert again.add_checkpoint(log.request(0)).status == 409
    assert again.add_checkpoint(log.request(3)).status == 200


def test_racing_requests_never_roll_the_witness_back(witness: Witness, log: Log) -> None:
    """The spec's race: a request for size N checked before one for N+K is stored after it. Check and
    store happen under one lock, so the witness ends at the largest size and refuses the other."""
    log.grow(10)
    witness.add_checkpoint(log.request(0))
    requests = {}
    for size in range(11, 31):
        log.grow(size)
        requests[size] = log.request(10, size)
    answers: dict[int, int] = {}

    def send(size: int) -> None:
        answers[size] = witness.add_checkpoint(requests[size]).status

    threads = [threading.Thread(target=send, args=(size,)) for size in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [size for size, status in answers.items() if status == 200]
    assert len(winners) == 1 and all(status == 409 for size, status in answers.items() if size not in winners)
    assert witness.state.get(ORIGIN).size == winners[0]  # type: ignore[union-attr]


def test_a_cosignature_does_not_verify_on_another_checkpoint(witness: Witness, log: Log, witness_key: WitnessKey) -> None:
    log.grow(3)
    line = witness.add_checkpoint(log.request(0)).body.decode()
    log.grow(4)
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_cosignatures(cosignature.add_cosignatures(log.note(), [line]), [witness_key.cosigner])


def test_witness_keys_round_trip_and_reject_log_keys(witness_key: WitnessKey, log: Log) -> None:
    assert Cosigner.from_vkey(witness_key.cosigner.to_vkey()) == witness_key.cosigner
    assert WitnessKey.from_secret(witness_key.to_secret()).cosigner == witness_key.cosigner
    with pytest.raises(ValueError, match="cosignature/v1"):
        Cosigner.from_vkey(log.signer.public_key.to_vkey())
    assert "PRIVATE" not in repr(witness_key)


# --- HTTP and the command ----------------------------------------------------------------------------------


@pytest.fixture
def served(witness: Witness) -> Iterator[str]:
    server = serve(witness, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _post(url: str, body: bytes) -> tuple[int, str, bytes]:
    request = urllib.request.Request(f"{url}/add-checkpoint", data=body, method="POST")  # noqa: S310 (a local test server)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_over_http(served: str, log: Log, witness_key: WitnessKey) -> None:
    log.grow(3)
    status, _, body = _post(served, log.request(0))
    assert status == 200 and _cosigned(log.note(), body, witness_key)
    log.grow(5)
    assert _post(served, log.request(0))[:2] == (409, SIZE_CONTENT_TYPE)
    with urllib.request.urlopen(f"{served}/healthz", timeout=5) as response:  # noqa: S310
        assert response.read() == b"ok\n"
    with urllib.request.urlopen(f"{served}/vkey", timeout=5) as response:  # noqa: S310
        assert response.read().decode().strip() == witness_key.cosigner.to_vkey()


def test_keygen_writes_a_private_key_once_and_prints_its_vkey(tmp_path: Path) -> None:
    key = tmp_path / "w.key"
    cmd = [sys.executable, "-m", "proofs.witness", "keygen", "--name", "witness.example.org/w9", "--out", str(key)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    assert Cosigner.from_vkey(out.stdout.strip()) == WitnessKey.load(key).cosigner
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr


def test_serve_with_a_bad_key_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    out = subprocess.run(
        [sys.executable, "-m", "proofs.witness", "serve", "--key", str(bad), "--state", str(tmp_path / "s"),
         "--log-vkey", Signer.generate(ORIGIN).public_key.to_vkey(), "--listen", "127.0.0.1:0"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 2 and "witness key must look like" in out.stderr and "Traceback" not in out.stderr


def test_the_witness_module_imports_no_django() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import sys, proofs.witness; print(any(m.startswith('django') for m in sys.modules))"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == "False"


def test_state_put_is_atomic(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.put(LogState(ORIGIN, 3, b"\1" * 32, "note\n"))
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".json" and p.name not in (".lock", "evidence")] == []
    assert store.get(ORIGIN) == LogState(ORIGIN, 3, b"\1" * 32, "note\n")
    assert store.get("other") is None
