"""The PKCS#11 key store against a real PKCS#11 implementation (SoftHSM, Debian's softhsm2): data keys
as token objects, destroyed in the token; the service's requests seal and open through it, and a purge
leaves a database copy unreadable."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from compliance.common import crypto
from compliance.common.keystore import KeyMissing, Pkcs11KeyStore

LIBRARY = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "483920"


@pytest.fixture(scope="session")
def token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not Path(LIBRARY).exists() or shutil.which("softhsm2-util") is None:
        pytest.skip("SoftHSM is not installed (apt-get install softhsm2)")
    folder = tmp_path_factory.mktemp("softhsm")
    (folder / "tokens").mkdir()
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    # The library reads its configuration when it is first loaded in this process.
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "compliance-test", "--pin", PIN, "--so-pin", "12345678"],
                   check=True, capture_output=True, env={**os.environ})
    yield "compliance-test"


def test_create_read_destroy_in_the_token(token: str) -> None:
    store = Pkcs11KeyStore(LIBRARY, token, PIN)
    store.create("k1")
    key = store.key("k1")
    assert len(key) == 32 and store.key("k1") == key
    store.put("k2", b"\x01" * 32)
    assert store.key("k2") == b"\x01" * 32
    store.destroy("k1")
    with pytest.raises(KeyMissing):
        store.key("k1")
    assert store.key("k2") == b"\x01" * 32  # only that key
    assert store.rewrap() == 0


def test_a_wrong_pin_reads_nothing(token: str) -> None:
    import pkcs11

    Pkcs11KeyStore(LIBRARY, token, PIN).create("k3")
    with pytest.raises(pkcs11.exceptions.PinIncorrect):
        Pkcs11KeyStore(LIBRARY, token, "000000").key("k3")


@pytest.mark.django_db
def test_the_service_seals_through_the_token_and_a_purge_shreds(token: str, settings: Any) -> None:
    from compliance.common.models import DataKey, key_store
    from compliance.erasure.models import ErasureRequest, Status
    from compliance.erasure.services import erasure_request_purge
    from tests import factories

    settings.KEYSTORE_BACKEND = "pkcs11"
    settings.KEYSTORE_PKCS11_LIBRARY = LIBRARY
    settings.KEYSTORE_PKCS11_TOKEN = token
    settings.KEYSTORE_PKCS11_PIN = PIN
    request = factories.request_in(Status.REFUSED, person=factories.ADA)
    other = factories.request_in(Status.TRIAGED, person=factories.subject(2))
    row = ErasureRequest.objects.get(pk=request.pk)
    assert row.data_key.store == DataKey.Store.KEYSTORE and bytes(row.data_key.wrapped) == b""
    assert row.identifiers()["email"] == factories.ADA.email
    sealed, key_id = bytes(row.identifiers_sealed), str(row.data_key_id)  # what a database copy holds

    erasure_request_purge(request=row)
    with pytest.raises(KeyMissing):
        key_store().key(key_id)
    with pytest.raises((KeyMissing, crypto.DataKeyDestroyed)):
        crypto.open_json(key_store().key(key_id), sealed, aad=f"erasure_request:{request.pk}:identifiers")
    assert ErasureRequest.objects.get(pk=other.pk).identifiers()["full_name"] == factories.subject(2).full_name


def test_production_refuses_the_pkcs11_store_without_a_pin(tmp_path: Path) -> None:
    import sys

    from tests.test_deployment import ROOT, production_env

    env = production_env(tmp_path, KEYSTORE_BACKEND="pkcs11")
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "KEYSTORE_PKCS11_PIN" in result.stderr
