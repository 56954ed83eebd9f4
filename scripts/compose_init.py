"""Create what `docker compose up` needs on a fresh clone, for a local stack: the secret files and .env.

    ./scripts/compose-init [--site-url http://127.0.0.1:8000] [--force-env]

Secrets (./secrets/, mode 0600, never overwritten): django_secret_key, field_encryption_key,
guard_hmac_key, postgres_password (the owner role), postgres_app_password (the application's
role) (random, 48 bytes) and witness_key (the compose witness's Ed25519
key). The audit and PDF signing keys are not here: the one-shot `migrate` service creates them in the
compliance-data volume on first start (manage.py deploy_prepare).

.env: .env.example with the values a local stack needs instead of the production placeholders:
served over plain HTTP on localhost (no TLS proxy, so no secure-only cookies or HSTS), e-mail written
to the mail spool in the data volume instead of an SMTP server, the database password from its secret,
and AUDIT_WITNESSES naming the compose witness with the key just created. An existing .env is kept
unless --force-env.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RANDOM_SECRETS = ("django_secret_key", "field_encryption_key", "guard_hmac_key", "postgres_password", "postgres_app_password")
WITNESS_NAME = "witness.local/compose"


def _write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")


def ensure_secrets(folder: Path) -> list[str]:
    created = []
    for name in RANDOM_SECRETS:
        path = folder / name
        if not path.exists():
            _write_secret(path, secrets.token_urlsafe(48))
            created.append(name)
    witness = folder / "witness_key"
    if not witness.exists():
        subprocess.run([sys.executable, "-m", "proofs.witness", "keygen", "--name", WITNESS_NAME, "--out", str(witness)],
                       cwd=ROOT, check=True, capture_output=True, text=True)
        created.append("witness_key")
    return created


def witness_vkey(folder: Path) -> str:
    """The witness's public key (vkey) from its secret key file."""
    from proofs.cosignature import WitnessKey

    return WitnessKey.load(folder / "witness_key").cosigner.to_vkey()


def local_env(example: str, *, site_url: str, vkey: str) -> str:
    host = re.sub(r"^https?://", "", site_url).split("/")[0].split(":")[0]
    overrides = {
        "DJANGO_ALLOWED_HOSTS": f"{host},localhost,127.0.0.1,web",
        "DJANGO_CSRF_TRUSTED_ORIGINS": site_url,
        "BEHIND_TLS_PROXY": "false",
        "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false",
        "SECURE_SSL_REDIRECT": "false",
        "SECURE_HSTS_SECONDS": "0",
        "SITE_URL": site_url,
        "ORGANISATION_NAME": "Local Compose Ltd",
        "DATABASE_URL": "postgres://compliance_app@postgres:5432/compliance",
        "AUDIT_LOG_ORIGIN": "compose.local/audit-log",
        "AUDIT_WITNESSES": f"http://witness:8380 {vkey}",
    }
    dropped = {"EMAIL_HOST", "EMAIL_PORT", "EMAIL_HOST_USER", "EMAIL_HOST_PASSWORD_FILE", "EMAIL_USE_TLS"}
    lines, seen = [], set()
    for line in example.splitlines():
        name = line.split("=", 1)[0].strip() if "=" in line and not line.lstrip().startswith("#") else ""
        if name in dropped:
            lines.append(f"# {line}  (local stack: e-mail goes to the mail spool in the data volume)")
        elif name in overrides:
            lines.append(f"{name}={overrides[name]}")
            seen.add(name)
        else:
            lines.append(line)
    lines += [f"{name}={value}" for name, value in overrides.items() if name not in seen]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/compose-init")
    parser.add_argument("--site-url", default="http://127.0.0.1:8000")
    parser.add_argument("--force-env", action="store_true", help="rewrite .env from .env.example")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    folder = args.root / "secrets"
    created = ensure_secrets(folder)
    print("secrets created: " + (", ".join(created) if created else "none (all present)"))
    env_file = args.root / ".env"
    if env_file.exists() and not args.force_env:
        print(".env kept (use --force-env to rewrite it from .env.example)")
    else:
        example = (ROOT / ".env.example").read_text(encoding="utf-8")
        env_file.write_text(local_env(example, site_url=args.site_url, vkey=witness_vkey(folder)), encoding="utf-8")
        print(f".env written for a local stack at {args.site_url}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
