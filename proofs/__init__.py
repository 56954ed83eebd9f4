"""The log's and the certificates' formats, free of Django: what an auditor needs and nothing else.

    merkle       RFC 6962 Merkle tree: leaf and node hashes, roots, inclusion and consistency proofs
    canonical    canonical JSON (RFC 8785 subset) and strict RFC 3339 timestamps
    keys         Ed25519 note keys, key names and the key ring (rotation, revocation)
    checkpoint   signed checkpoints (the C2SP signed-note / tlog-checkpoint formats)
    cosignature  witness cosignatures (C2SP tlog-cosignature)
    witness      the stand-alone witness process (`python -m proofs.witness serve`)
    datacommit   the Merkle commitment to a training set (absence proofs for exact erasure)
    envelope     the certificate document and its DSSE envelope
    pdf, pdfsign the certificate's PDF rendering and its PAdES signature
    offline      the offline verifier (`erasure-verify`, `python -m proofs`)

The Django apps (compliance.audit, compliance.certificates) store, sign and serve these; nothing
here imports Django, DRF or Celery (import contract `pure` in .importlinter).
"""
