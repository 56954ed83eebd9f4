"""The log's and the certificates' formats, free of Django: what an auditor needs and nothing else.

    merkle       RFC 6962 Merkle tree: leaf and node hashes, roots, inclusion and consistency proofs
    canonical    canonical JSON (RFC 8785 subset) and strict RFC 3339 timestamps
    keys         Ed25519 note keys, key names and the key ring (rotation, revocation)
    checkpoint   signed checkpoints (the C2SP signed-note / tlog-checkpoint formats)
    cosignature  witness cosignatures (C2SP tlog-cosignature)
    witness      the stand-alone witness process (`python -m proofs.witness serve`)
    datacommit   the Merkle commitment to a training set (absence proofs for exact erasure)
    envelope     the certificate payload's schema and its validation
    dsse         the DSSE signature envelope around it
    issuing      building the payload from plain data and signing it
    pdf          what the certificate's PDF states; pdf_render draws it; pdfsign its PAdES signature
    offline      the offline verifier (`erasure-verify`, `python -m proofs`), its steps in checks,
                 exact_checks (an exact erasure's proof) and pdf_checks (the PDF as a document)

The Django apps (compliance.audit, compliance.certificates) store, sign and serve these; nothing
here imports Django, DRF or Celery (import contract `pure` in .importlinter).
"""
