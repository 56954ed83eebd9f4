"""PAdES signatures on certificate PDFs, so that any PDF reader shows an edit (pure: no Django).

The certificate's evidence is the DSSE statement embedded in the PDF (`pdf_render.py`), signed by the
audit log's Ed25519 keys. Those signatures cover the statement, not the page a person reads. This
module signs the whole file with a PDF signature (ETSI.CAdES.detached, PAdES baseline B-B, via
pyHanko) that every reader checks on opening: editing the visible text, or appending anything after
signing, breaks it or leaves it covering only an earlier revision.

Algorithm: ECDSA P-256 with SHA-256. Readers verify PDF signatures with their own crypto stacks;
poppler (pdfsig, evince) uses NSS, which in poppler 22.12 reports an Ed25519 PAdES signature as
"Document isn't signed or corrupted data", while ECDSA P-256 and RSA-3072 verify. P-256 is the smaller
and faster of the two.

Key and certificate: one private key (PEM PKCS#8, a file outside the database) and a self-signed
X.509 certificate. The certificate is not meant to chain to a public CA: it is published with the
audit key ring, and verifiers *pin* it (trust it because it is the one the issuer published), as they
pin the log keys. A rotation publishes a new certificate next to the old ones, so that PDFs signed
before keep verifying.

The signature is a certification signature with DocMDP "no changes allowed" in an invisible field:
readers show the document as certified and flag any later change.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

T = TypeVar("T")

SIGNATURE_FIELD = "CertificateOfErasure"
PADES_SUBFILTER = "/ETSI.CAdES.detached"
CERTIFICATE_VALIDITY = timedelta(days=3650)  # a certificate of erasure is kept for years
CLOCK_SKEW = timedelta(hours=1)  # not_before is backdated so that a signer with a slow clock can use a new key
_NAME_LIMIT = 64  # X.520 upper bound of commonName and organizationName


class PdfKeyError(ValueError):
    """A PDF signing key or certificate file is malformed or they do not belong together.
    Messages never contain secret material."""


class PdfSignatureError(ValueError):
    """The PDF cannot be read far enough to find or check its signature."""


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER bytes, lower-case hex (what a verifier pins and compares)."""
    return certificate.fingerprint(hashes.SHA256()).hex()


def describe_certificate(certificate: x509.Certificate) -> str:
    """`"<common name>" (SHA-256 0123456789abcdef…)`: enough for a person to tell two certificates apart."""
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(names[0].value) if names else certificate.subject.rfc4514_string()
    return f'"{common_name}" (SHA-256 {certificate_fingerprint(certificate)[:16]}\u2026)'


@dataclass(frozen=True)
class PdfSigningKey:
    """The private key and the certificate that names its public key. `repr` never shows the key."""

    private_key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    def __post_init__(self) -> None:
        if not isinstance(self.private_key, ec.EllipticCurvePrivateKey) or not isinstance(
            self.private_key.curve, ec.SECP256R1
        ):
            raise PdfKeyError("the PDF signing key must be an ECDSA P-256 key")
        if self.certificate.public_key() != self.private_key.public_key():
            raise PdfKeyError("the PDF signing certificate does not name the signing key's public key")

    def __repr__(self) -> str:
        return f"PdfSigningKey({describe_certificate(self.certificate)})"

    def private_key_pem(self) -> bytes:
        """PEM PKCS#8, unencrypted. Secret: write it only to a 0600 file or a secret store."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def generate_pdf_signing_key(organisation: str, *, now: datetime | None = None) -> PdfSigningKey:
    """A fresh P-256 key and its self-signed certificate, named after the issuing organisation."""
    moment = now or datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"{organisation} certificates of erasure"[:_NAME_LIMIT]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation[:_NAME_LIMIT] or "unnamed"),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(moment - CLOCK_SKEW)
        .not_valid_after(moment + CERTIFICATE_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            # digitalSignature and nonRepudiation (content commitment): what PDF readers and pyHanko
            # expect of a document signer. No extended key usage: Acrobat refuses unexpected ones.
            x509.KeyUsage(
                digital_signature=True, content_commitment=True, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return PdfSigningKey(private_key=key, certificate=certificate)


def certificates_pem(certificates: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def load_pdf_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle (the published set); at least one."""
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise PdfKeyError("not a PEM file of X.509 certificates") from None
    if not certificates:  # pragma: no cover - cryptography raises for an empty bundle
        raise PdfKeyError("the PEM file holds no certificate")
    return certificates


def load_pdf_signing_key(key_pem: bytes, published: Sequence[x509.Certificate]) -> PdfSigningKey:
    """The signing key with its certificate, which must be among the `published` ones: a key signs
    only once verifiers can pin its certificate."""
    try:
        private_key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise PdfKeyError("the PDF signing key is not an unencrypted PEM PKCS#8 key") from None
    if not isinstance(private_key, ec.EllipticCurvePrivateKey):
        raise PdfKeyError("the PDF signing key must be an ECDSA P-256 key")
    for certificate in published:
        if certificate.public_key() == private_key.public_key():
            return PdfSigningKey(private_key=private_key, certificate=certificate)
    raise PdfKeyError("the PDF signing key's certificate is not among the published PDF signing certificates")


def sign_certificate_pdf(data: bytes, key: PdfSigningKey, *, reason: str, signer_name: str) -> bytes:
    """`data` with a PAdES B-B certification signature (SHA-256, ECDSA) appended as an incremental update."""
    from asn1crypto import keys as asn1_keys
    from asn1crypto import x509 as asn1_x509
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import signers
    from pyhanko.sign.fields import MDPPerm, SigSeedSubFilter
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    certificate = asn1_x509.Certificate.load(key.certificate.public_bytes(serialization.Encoding.DER))
    private_key = asn1_keys.PrivateKeyInfo.load(
        key.private_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    signer = signers.SimpleSigner(
        signing_cert=certificate,
        signing_key=private_key,
        cert_registry=SimpleCertificateStore.from_certs([certificate]),
    )
    metadata = signers.PdfSignatureMetadata(
        field_name=SIGNATURE_FIELD,
        subfilter=SigSeedSubFilter.PADES,
        md_algorithm="sha256",
        certify=True,
        docmdp_permissions=MDPPerm.NO_CHANGES,
        reason=reason,
        name=signer_name,
    )
    signed = _off_any_event_loop(
        lambda: signers.sign_pdf(IncrementalPdfFileWriter(io.BytesIO(data)), metadata, signer=signer)
    )
    return bytes(signed.getvalue())


def _off_any_event_loop(call: Callable[[], T]) -> T:
    """Run pyHanko's synchronous API, which calls asyncio.run(): at once when this thread runs no event
    loop, otherwise in a short-lived thread (under an ASGI server, an async worker or a test session
    whose browser driver keeps a loop running, asyncio.run() would refuse)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return call()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="pdfsign") as pool:
        return pool.submit(call).result()


@dataclass(frozen=True)
class PdfSignature:
    """What a verifier needs to know about the PDF signature of a certificate PDF."""

    count: int  # signature fields that hold a signature; a certificate carries exactly one
    field_name: str
    subfilter: str  # "/ETSI.CAdES.detached" for PAdES
    intact: bool  # the digest of the signed byte ranges matches the signed digest
    valid: bool  # the signature value verifies against the signer certificate's public key
    covers_whole_file: bool  # nothing follows the signed revision
    unsigned_bytes: int  # bytes after the end of the signed byte range
    later_revisions: int  # incremental updates after the signed revision
    mechanism: str  # e.g. "sha256_ecdsa"
    signer: x509.Certificate | None
    signed_at: datetime | None  # as the signer reported it (no timestamp token in B-B)


def read_pdf_signature(data: bytes) -> PdfSignature | None:
    """The first signature of a PDF, checked for integrity and coverage; None if it has none.

    Trust is not decided here: the caller compares `signer` with the certificates it pins.
    Raises PdfSignatureError when the file or its signature cannot be parsed.
    """
    from asn1crypto import x509 as asn1_x509
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko_certvalidator import ValidationContext

    try:
        reader = PdfFileReader(io.BytesIO(data))
        signatures = list(reader.embedded_signatures)
    except Exception as exc:  # noqa: BLE001 - a hostile file makes the parser raise many types; all mean "unreadable"
        raise PdfSignatureError(f"the PDF cannot be read ({type(exc).__name__})") from None
    if not signatures:
        return None
    signature = signatures[0]
    try:
        signer_asn1 = signature.signer_cert
        signer = x509.load_der_x509_certificate(signer_asn1.dump())
        # The context only lets pyHanko finish; trust is the caller's pin, never this context's verdict.
        context = ValidationContext(
            trust_roots=[asn1_x509.Certificate.load(signer_asn1.dump())], allow_fetching=False
        )
        # skip_diff: a certificate PDF must have nothing after its signature, so there is no later
        # revision whose changes would need classifying (coverage says whether there is one).
        status = _off_any_event_loop(lambda: validate_pdf_signature(signature, context, skip_diff=True))
        byte_range = [int(x) for x in signature.sig_object["/ByteRange"]]
        total_revisions = reader.xrefs.total_revisions
    except Exception as exc:  # noqa: BLE001 - as above: malformed CMS or PDF objects raise many types
        raise PdfSignatureError(f"the PDF signature cannot be read ({type(exc).__name__})") from None
    from pyhanko.sign.validation.status import SignatureCoverageLevel

    signed_end = byte_range[2] + byte_range[3] if len(byte_range) == 4 else 0
    return PdfSignature(
        count=len(signatures),
        field_name=str(signature.field_name),
        subfilter=str(signature.sig_object.get("/SubFilter", "")),
        intact=bool(status.intact),
        valid=bool(status.valid),
        covers_whole_file=status.coverage == SignatureCoverageLevel.ENTIRE_FILE,
        unsigned_bytes=max(0, len(data) - signed_end),
        later_revisions=max(0, total_revisions - 1 - signature.signed_revision),
        mechanism=str(status.pkcs7_signature_mechanism),
        signer=signer,
        signed_at=status.signer_reported_dt,
    )
