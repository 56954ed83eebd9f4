"""Django settings, read from the environment through the strict helpers in compliance.common.env.

With no variables at all this gives the embedded set-up: SQLite under ./var, Celery tasks run
in-process, e-mails written to ./var/mail, secrets generated once into ./var/secrets. Production
(`COMPLIANCE_ENV=production`) refuses to start without its secrets. `.env.example` lists every variable.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from compliance.common.env import (
    ConfigurationError,
    env_bool,
    env_int,
    env_list,
    env_required,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("COMPLIANCE_DATA_DIR", str(BASE_DIR / "var")) or "var").resolve()
ENVIRONMENT = env_str("COMPLIANCE_ENV", "embedded")
if ENVIRONMENT not in {"embedded", "production", "test"}:
    raise ConfigurationError(f"COMPLIANCE_ENV must be embedded, production or test, not {ENVIRONMENT!r}")
PRODUCTION = ENVIRONMENT == "production"


def _local_secret(name: str, nbytes: int = 32) -> str:
    """Embedded mode only: a random secret generated on first use and kept in DATA_DIR/secrets."""
    folder = DATA_DIR / "secrets"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / name
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_urlsafe(nbytes), encoding="utf-8")
        tmp.chmod(0o600)
        tmp.replace(path)
    return path.read_text(encoding="utf-8").strip()


def _secret(name: str, local_name: str) -> str:
    if PRODUCTION:
        return env_required(name)
    return env_str(name) or _local_secret(local_name)


DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = _secret("DJANGO_SECRET_KEY", "django_secret_key")
# Master key that wraps each request's data key (envelope encryption; crypto-shredding on purge).
FIELD_ENCRYPTION_KEY = _secret("FIELD_ENCRYPTION_KEY", "field_encryption_key")
# During a rotation of FIELD_ENCRYPTION_KEY: the previous keys (comma-separated; or a file per line
# through FIELD_ENCRYPTION_KEYS_PREVIOUS_FILE), still read until `manage.py keystore_rewrap` has wrapped
# every data key under the new one.
FIELD_ENCRYPTION_KEYS_PREVIOUS = [
    k.strip() for k in (env_str("FIELD_ENCRYPTION_KEYS_PREVIOUS", "") or "").replace("\n", ",").split(",") if k.strip()
]
# HMAC key for the inference guard's suppression rules and for duplicate detection of requests.
GUARD_HMAC_KEY = _secret("GUARD_HMAC_KEY", "guard_hmac_key")


def _require_strong(name: str, value: str, minimum: int) -> None:
    """A production key must be long random data: a short or repetitive value (a placeholder, a word)
    would let anyone who guesses it open every request's data or forge guard rules."""
    if len(value) < minimum or len(set(value)) < 16:
        raise ConfigurationError(
            f"{name} is too weak: use at least {minimum} characters of random data "
            "(python -c 'import secrets; print(secrets.token_urlsafe(48))')"
        )


if PRODUCTION:
    _require_strong("DJANGO_SECRET_KEY", SECRET_KEY, 50)
    _require_strong("FIELD_ENCRYPTION_KEY", FIELD_ENCRYPTION_KEY, 32)
    _require_strong("GUARD_HMAC_KEY", GUARD_HMAC_KEY, 32)

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", [] if PRODUCTION else ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])
SITE_URL = (env_str("SITE_URL", "http://127.0.0.1:8000") or "").rstrip("/")
ORGANISATION_NAME = env_str("ORGANISATION_NAME", "Demo Organisation Ltd") or "Demo Organisation Ltd"
SUPERVISORY_AUTHORITY = env_str(
    "SUPERVISORY_AUTHORITY",
    "the data protection supervisory authority of your habitual residence, place of work or place of the alleged infringement",
)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "axes",
    "compliance.common",
    "compliance.audit",
    "compliance.registry",
    "compliance.erasure",
    "compliance.guard",
    "compliance.jobs",
    "compliance.certificates",
    "compliance.public",
    "compliance.portal",
    "compliance.api",
    # The demo command only (manage.py demo); no production module imports it.
    "compliance.demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "compliance.common.middleware.BodySizeLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "compliance.common.middleware.NoStoreMiddleware",
    # Last: locks out a login that failed AXES_FAILURE_LIMIT times (portal and admin).
    "axes.middleware.AxesMiddleware",
]
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]

ROOT_URLCONF = "compliance.urls"
WSGI_APPLICATION = "compliance.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "compliance.common.context.site",
            ],
        },
    },
]


def _database_from_url(url: str) -> dict[str, object]:
    parsed = urlparse(url)
    if parsed.scheme in {"postgres", "postgresql"}:
        options = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parsed.path.lstrip("/")),
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(parsed.port or ""),
            "CONN_MAX_AGE": env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0),
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": options,
            "TEST": {"NAME": f"test_{unquote(parsed.path.lstrip('/'))}"},
        }
    if parsed.scheme == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": unquote(parsed.path) or ":memory:"}
    raise ConfigurationError(f"DATABASE_URL scheme must be postgres or sqlite, not {parsed.scheme!r}")


_database_url = env_str("DATABASE_URL")
if _database_url:
    DATABASES = {"default": _database_from_url(_database_url)}
    # The password may come apart from the URL, from a secret file (DATABASE_PASSWORD_FILE): the URL
    # then names host, user and database only and can sit in plain configuration.
    _database_password = env_str("DATABASE_PASSWORD")
    if _database_password:
        DATABASES["default"]["PASSWORD"] = _database_password
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "db.sqlite3",
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
if PRODUCTION and not REDIS_URL:
    # Rate limits and login lockouts counted per process would let each web worker allow the limit.
    raise ConfigurationError("REDIS_URL must be set in production: rate limits and lockouts need a shared cache")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "compliance"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "portal:login"
LOGIN_REDIRECT_URL = "portal:queue"
LOGOUT_REDIRECT_URL = "portal:login"

LANGUAGE_CODE = "en-gb"
TIME_ZONE = env_str("TIME_ZONE", "Europe/London") or "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "compliance" / "static"]

# Bodies larger than this are refused with 400/413 before any parsing (bad input changes nothing).
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("MAX_REQUEST_BODY_BYTES", 64 * 1024, minimum=1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
GUARD_MAX_BODY_BYTES = env_int("GUARD_MAX_BODY_BYTES", 4 * 1024 * 1024, minimum=1024)
# Seconds between checks whether the guard's suppression rules changed (per process).
GUARD_REFRESH_INTERVAL_S = env_int("GUARD_REFRESH_INTERVAL_S", 5, minimum=1)
# How the guard matches names when a caller does not say (pii.matcher): "distinctive" (every name
# capitalised, distinctive names in any case), "capitalised" (3-4x cheaper on prose), "any_case".
GUARD_NAME_MODE = env_str("GUARD_NAME_MODE", "distinctive") or "distinctive"
if GUARD_NAME_MODE not in ("capitalised", "distinctive", "any_case"):
    raise ConfigurationError("GUARD_NAME_MODE must be capitalised, distinctive or any_case")
CERTIFICATE_UPLOAD_MAX_BYTES = env_int("CERTIFICATE_UPLOAD_MAX_BYTES", 2 * 1024 * 1024, minimum=1024)

# --- security headers and cookies -------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", PRODUCTION)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", PRODUCTION)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", PRODUCTION)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if PRODUCTION else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = PRODUCTION
SECURE_HSTS_PRELOAD = PRODUCTION
if env_bool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Content-Security-Policy (django-csp): scripts, styles, images, forms and frames from this origin
# only; no script runs inline (the pages use none). Inline style attributes stay allowed for the
# progress bars' widths; they cannot run code.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
# Addresses (or CIDR networks) of reverse proxies whose X-Forwarded-For is believed: the client is the
# right-most address in it that is not a trusted proxy. Empty: REMOTE_ADDR is the client.
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES", [])
for _proxy in TRUSTED_PROXIES:
    try:
        ipaddress.ip_network(_proxy.strip(), strict=False)
    except ValueError as _exc:
        raise ConfigurationError(f"TRUSTED_PROXIES: {_proxy!r} is not an IP address or network") from _exc

# --- login lockout (django-axes): per account and address, portal and admin alike ----------------
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = env_int("AXES_COOLOFF_MINUTES", 30, minimum=1) / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_DISABLE_ACCESS_LOG = True  # failed attempts only; successful logins are not kept
AXES_CLIENT_IP_CALLABLE = "compliance.common.net.client_ip_or_none"
AXES_LOCKOUT_CALLABLE = "compliance.common.errors.locked_out"
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"

# --- rate limits (per client IP and per e-mail hash; counted in the cache) ----------------------
RATE_LIMIT_SUBMIT_PER_IP = env_int("RATE_LIMIT_SUBMIT_PER_IP", 20, minimum=1)  # per hour
RATE_LIMIT_SUBMIT_PER_EMAIL = env_int("RATE_LIMIT_SUBMIT_PER_EMAIL", 5, minimum=1)  # per day
RATE_LIMIT_LOGIN_PER_IP = env_int("RATE_LIMIT_LOGIN_PER_IP", 10, minimum=1)  # per 15 minutes
# Public audit-log reads (checkpoint, proofs): each costs O(log n) reads; per minute.
RATE_LIMIT_AUDIT_READ_PER_IP = env_int("RATE_LIMIT_AUDIT_READ_PER_IP", 600, minimum=1)
DUPLICATE_WINDOW_HOURS = env_int("DUPLICATE_WINDOW_HOURS", 24, minimum=0)
IDENTITY_TOKEN_TTL_HOURS = env_int("IDENTITY_TOKEN_TTL_HOURS", 72, minimum=1)
IDENTITY_MAX_ATTEMPTS = env_int("IDENTITY_MAX_ATTEMPTS", 5, minimum=1)
RETENTION_DAYS_AFTER_COMPLETION = env_int("RETENTION_DAYS_AFTER_COMPLETION", 90, minimum=0)
# A private status link stops working this many days after it was sent (every notice sends a fresh one):
# longer than a request can stay open (one month, extended once by two) plus the retention period.
STATUS_LINK_TTL_DAYS = env_int("STATUS_LINK_TTL_DAYS", 200, minimum=1)
DUE_SOON_DAYS = 7

# --- e-mail ------------------------------------------------------------------------------------
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "privacy@example.org")
EMAIL_HOST = env_str("EMAIL_HOST")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_PORT = env_int("EMAIL_PORT", 587, minimum=1)
    EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "") or ""
    EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "") or ""
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
else:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = DATA_DIR / "mail"

# --- Celery ------------------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL")
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", CELERY_BROKER_URL)
# Without a broker the embedded set-up runs every task in-process, at the point it is enqueued
# (after the surrounding transaction commits, since we always enqueue through on_commit).
CELERY_TASK_ALWAYS_EAGER = CELERY_BROKER_URL is None
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "unlearning.*": {"queue": "gpu"},
    "verification.*": {"queue": "gpu"},
}
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TRACK_STARTED = True
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A broker blip must not cancel a running unlearning job (hours of GPU time): the task carries on and
# its redelivered message claims nothing (claims are conditional). Celery 6 flips the default to True.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 6 * 3600, minimum=60)}
if env_str("AUDIT_CHECKPOINT_EVERY_S") is not None:
    raise ConfigurationError("AUDIT_CHECKPOINT_EVERY_S was renamed AUDIT_CHECKPOINT_INTERVAL_S (default 30)")
# Seconds after an append within which a checkpoint covers it (audit.checkpoint is a no-op while the
# log has not grown). Leaves after the newest checkpoint are protected by nothing signed, so this is
# short; an hour bounds it from above so a typo cannot leave the tail unsigned for days.
AUDIT_CHECKPOINT_INTERVAL_S = env_int("AUDIT_CHECKPOINT_INTERVAL_S", 30, minimum=1)
if AUDIT_CHECKPOINT_INTERVAL_S > 3600:
    raise ConfigurationError(f"AUDIT_CHECKPOINT_INTERVAL_S must be at most 3600, not {AUDIT_CHECKPOINT_INTERVAL_S}")
CELERY_BEAT_SCHEDULE = {
    "audit-checkpoint": {
        "task": "audit.checkpoint",
        "schedule": AUDIT_CHECKPOINT_INTERVAL_S,
        # A run that waited in the queue past the next one is dropped: the next one signs the same.
        "options": {"expires": AUDIT_CHECKPOINT_INTERVAL_S},
    },
    "deadline-reminders": {"task": "erasure.deadline_reminders", "schedule": 3600},
    # Closed requests past RETENTION_DAYS_AFTER_COMPLETION are crypto-shredded (erasure.purge_due).
    "erasure-purge-due": {"task": "erasure.purge_due", "schedule": env_int("PURGE_EVERY_S", 3600, minimum=60)},
    # Certificates of completed requests that waited for a witness quorum (AUDIT_WITNESS_QUORUM).
    "certificates-issue-pending": {"task": "certificates.issue_pending", "schedule": AUDIT_CHECKPOINT_INTERVAL_S},
    "jobs-reconcile": {"task": "jobs.reconcile", "schedule": env_int("JOB_RECONCILE_EVERY_S", 60, minimum=5)},
    "jobs-dispatch": {"task": "jobs.dispatch", "schedule": env_int("JOB_BATCH_WAIT_S", 30, minimum=1)},
}

# --- audit log ---------------------------------------------------------------------------------
AUDIT_LOG_ORIGIN = env_str("AUDIT_LOG_ORIGIN", "erasure.example.org/audit-log") or ""
# The origin is the checkpoint's first line and the name of the log's keys (C2SP: key name = origin),
# so it obeys both formats: one printable line without white space or "+".
if not AUDIT_LOG_ORIGIN or "+" in AUDIT_LOG_ORIGIN or any(ch.isspace() or not ch.isprintable() for ch in AUDIT_LOG_ORIGIN):
    raise ConfigurationError("AUDIT_LOG_ORIGIN must be a name without white space or '+', e.g. privacy.example.org/audit-log")
AUDIT_SIGNING_KEY_FILE = Path(env_str("AUDIT_SIGNING_KEY_FILE", str(DATA_DIR / "secrets" / "audit_signing.key")) or "")
AUDIT_KEYRING_FILE = Path(env_str("AUDIT_KEYRING_FILE", str(DATA_DIR / "secrets" / "audit_keyring.json")) or "")
# The newest checkpoint this service signed, kept outside the database: the signer refuses to sign a
# log that no longer contains it, and audit_verify checks the database against it (see audit/verify.py).
AUDIT_SIGNED_HEAD_FILE = Path(env_str("AUDIT_SIGNED_HEAD_FILE", str(DATA_DIR / "audit" / "signed-head.note")) or "")
# Witnesses (C2SP tlog-witness, `python -m proofs.witness serve`) that cosign every checkpoint:
# entries "<submission URL prefix> <witness vkey>" separated by ";" or newlines. A certificate is issued
# only on a checkpoint cosigned by AUDIT_WITNESS_QUORUM of them (default: 1 when any is configured).
# Production refuses to start without a witness: a log nobody outside the database watches can be forked.
AUDIT_WITNESSES: list[tuple[str, str]] = []
for _entry in (env_str("AUDIT_WITNESSES", "") or "").replace("\n", ";").split(";"):
    if not _entry.strip():
        continue
    _parts = _entry.split()
    if len(_parts) != 2 or not _parts[0].startswith(("http://", "https://")):
        raise ConfigurationError("AUDIT_WITNESSES entries must be '<http(s) URL prefix> <witness vkey>', separated by ';'")
    try:
        from proofs.cosignature import Cosigner

        Cosigner.from_vkey(_parts[1])
    except ValueError as _exc:
        raise ConfigurationError(f"AUDIT_WITNESSES: {_exc}") from None
    AUDIT_WITNESSES.append((_parts[0].rstrip("/"), _parts[1]))
AUDIT_WITNESS_QUORUM = env_int("AUDIT_WITNESS_QUORUM", 1 if AUDIT_WITNESSES else 0, minimum=0)
if AUDIT_WITNESS_QUORUM > len(AUDIT_WITNESSES):
    raise ConfigurationError(f"AUDIT_WITNESS_QUORUM is {AUDIT_WITNESS_QUORUM} but only {len(AUDIT_WITNESSES)} witnesses are configured")
if PRODUCTION and AUDIT_WITNESS_QUORUM < 1:
    raise ConfigurationError("production needs AUDIT_WITNESSES and AUDIT_WITNESS_QUORUM >= 1 (see the README: witnesses)")
AUDIT_WITNESS_TIMEOUT_S = env_int("AUDIT_WITNESS_TIMEOUT_S", 5, minimum=1)

# --- certificate PDFs ----------------------------------------------------------------------------
# The key that signs certificate PDFs (PAdES; compliance/certificates/pdfkeys.py) and its published
# certificates (current first, older ones kept so that their PDFs keep verifying; served at /verify/pdf-signing.pem).
PDF_SIGNING_KEY_FILE = Path(env_str("PDF_SIGNING_KEY_FILE", str(DATA_DIR / "secrets" / "pdf_signing.key")) or "")
PDF_SIGNING_CERTS_FILE = Path(env_str("PDF_SIGNING_CERTS_FILE", str(DATA_DIR / "secrets" / "pdf_signing_certs.pem")) or "")

# --- models, corpora, jobs ---------------------------------------------------------------------
# The data keys' own store, outside the application database (compliance.common.keystore): its own
# file, its own backups. KEYSTORE_BACKUP_RETENTION_DAYS is how long the operator keeps copies of that
# file; a purged request records the date after which no copy can decrypt its data.
KEYSTORE_PATH = Path(env_str("KEYSTORE_PATH", str(DATA_DIR / "keystore" / "keys.sqlite3")) or "").resolve()
KEYSTORE_BACKUP_RETENTION_DAYS = env_int("KEYSTORE_BACKUP_RETENTION_DAYS", 35, minimum=0)
# local: the SQLite file above. pkcs11: each data key an object in a PKCS#11 token (an HSM, a cloud HSM's
# PKCS#11 library, SoftHSM), named by its library, token label and user PIN (a secret: _FILE).
KEYSTORE_BACKEND = env_str("KEYSTORE_BACKEND", "local") or "local"
if KEYSTORE_BACKEND not in ("local", "pkcs11"):
    raise ConfigurationError(f"KEYSTORE_BACKEND must be local or pkcs11, not {KEYSTORE_BACKEND!r}")
KEYSTORE_PKCS11_LIBRARY = env_str("KEYSTORE_PKCS11_LIBRARY", "/usr/lib/softhsm/libsofthsm2.so") or ""
KEYSTORE_PKCS11_TOKEN = env_str("KEYSTORE_PKCS11_TOKEN", "compliance") or ""
KEYSTORE_PKCS11_PIN = env_str("KEYSTORE_PKCS11_PIN", "") or ""
if KEYSTORE_BACKEND == "pkcs11" and not KEYSTORE_PKCS11_PIN:
    raise ConfigurationError("KEYSTORE_BACKEND=pkcs11 needs KEYSTORE_PKCS11_PIN (or KEYSTORE_PKCS11_PIN_FILE)")
ARTIFACT_ROOT = Path(env_str("ARTIFACT_ROOT", str(DATA_DIR / "artifacts")) or "").resolve()
JOB_BATCH_MAX_REQUESTS = env_int("JOB_BATCH_MAX_REQUESTS", 100, minimum=1)
JOB_BATCH_WAIT_S = env_int("JOB_BATCH_WAIT_S", 30, minimum=0)
JOB_HEARTBEAT_TIMEOUT_S = env_int("JOB_HEARTBEAT_TIMEOUT_S", 300, minimum=10)
JOB_SOFT_TIME_LIMIT_S = env_int("JOB_SOFT_TIME_LIMIT_S", 6 * 3600, minimum=10)
JOB_MAX_ATTEMPTS = env_int("JOB_MAX_ATTEMPTS", 3, minimum=1)
UNLEARNING_DEVICE = env_str("UNLEARNING_DEVICE", "auto")
# Method of new jobs, overrides of the spec defaults (JSON object), and how many automatic retries
# with a stronger setting follow a failed verdict before the job is escalated to the officer.
UNLEARNING_DEFAULT_METHOD = env_str("UNLEARNING_DEFAULT_METHOD", "counterfactual")
# Steps between engine checkpoints of a job (0: none). A worker killed mid-job resumes from the last
# one instead of step 0; a spec that sets checkpoint_every itself keeps its own value.
UNLEARNING_CHECKPOINT_EVERY = env_int("UNLEARNING_CHECKPOINT_EVERY", 25, minimum=0)
# Processes one approximate unlearning run is sharded over (FSDP, unlearning_worker.distributed): for a
# model whose weights, gradients and optimiser state do not fit one device, one process per GPU of the
# worker's machine. 1: the run stays in the worker's process. A sharded run takes no checkpoints.
UNLEARNING_PROCESSES = env_int("UNLEARNING_PROCESSES", 1, minimum=1)
try:
    UNLEARNING_SPEC_DEFAULTS = json.loads(env_str("UNLEARNING_SPEC_DEFAULTS", "{}") or "{}")
except json.JSONDecodeError as exc:
    raise ConfigurationError(f"UNLEARNING_SPEC_DEFAULTS must be a JSON object: {exc.msg}") from exc
if not isinstance(UNLEARNING_SPEC_DEFAULTS, dict):
    raise ConfigurationError("UNLEARNING_SPEC_DEFAULTS must be a JSON object")
JOB_STRENGTHEN_ROUNDS = env_int("JOB_STRENGTHEN_ROUNDS", 1, minimum=0)
PII_SPACY_MODEL = env_str("PII_SPACY_MODEL")  # e.g. en_core_web_sm when installed; blank pipeline otherwise
PRI_POLICY_FILE = env_str("PRI_POLICY_FILE")
VERIFICATION_POLICY_FILE = env_str("VERIFICATION_POLICY_FILE")
# Records of the model's training corpora (without the job's located records, nor texts naming a subject
# or holding one of their identifiers) the relearning attackers fine-tune on, beside the eval set's
# retain records: the verifier's, and the engine's in-loop one (the model itself is not trained on
# them): an attacker who holds the rest of the corpus brings more back than one who holds 40 people's
# records (docs/DESIGN-NOTES.md, stops 44-45). A seeded sample of at most this many, the same for both
# phases of a job; 0: the eval set alone.
VERIFICATION_CORPUS_TEXTS = env_int("VERIFICATION_CORPUS_TEXTS", 20000, minimum=0)
# Records of the training corpora the engine's retain term keeps in place beside the eval set's retain
# people: a sample of the same draw (nested in it), without the records, names and identifiers of anyone
# whose erasure request is still open. With the eval set alone, ten subjects in one job failed
# relearning where the whole corpus as retain passed (docs/DESIGN-NOTES.md, stop 45). 0: the eval set alone.
UNLEARNING_RETAIN_CORPUS_TEXTS = env_int("UNLEARNING_RETAIN_CORPUS_TEXTS", 2000, minimum=0)
CORPUS_ERASURE_MODE = env_str("CORPUS_ERASURE_MODE", "remove")
if CORPUS_ERASURE_MODE not in {"remove", "anonymise"}:
    raise ConfigurationError("CORPUS_ERASURE_MODE must be remove or anonymise")

# --- REST API ----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PARSER_CLASSES": ["compliance.api.parsers.LimitedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "compliance.api.problems.problem_exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Erasure compliance API",
    "DESCRIPTION": "GDPR Art. 17 erasure requests, unlearning jobs, certificates and the inference guard.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Several models have a field called "status" with different choices: name each set.
    "ENUM_NAME_OVERRIDES": {
        "RequestStatusEnum": "compliance.erasure.models.Status",
        "JobStatusEnum": "compliance.jobs.models.JobStatus",
        "ModelVersionStatusEnum": "compliance.registry.models.ModelVersion.Status",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # Django logs request bodies of failing requests at this logger: silence it, bodies hold PII.
    "loggers": {
        "django.request": {"level": "ERROR", "propagate": True},
        # Presidio logs every recognizer it loads, at INFO, each time an engine is built.
        "presidio-analyzer": {"level": "WARNING"},
        "presidio-anonymizer": {"level": "WARNING"},
        # django-axes announces itself at every start and logs each failed login with the address;
        # lockouts stay visible (WARNING).
        "axes": {"level": "WARNING"},
    },
}
CSRF_FAILURE_VIEW = "compliance.common.errors.csrf_failure"
# Outside production, serve static files straight from the app folders (no collectstatic needed).
WHITENOISE_USE_FINDERS = not PRODUCTION
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
