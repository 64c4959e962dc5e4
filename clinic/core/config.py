"""Configuration from the environment, with safe defaults for a developer's machine.

Secrets never live in the repository: in production they come from the environment;
on a developer's machine they are generated once into the instance folder.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Config as FlaskBaseConfig

if TYPE_CHECKING:
    from flask import Flask

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _local_secret(instance: Path, name: str, nbytes: int = 32) -> str:
    """A secret generated once on this machine and kept in the instance folder."""
    instance.mkdir(parents=True, exist_ok=True)
    path = instance / f"{name}.secret"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(nbytes))
    return path.read_text().strip()


def _local_ec_key(instance: Path, name: str) -> str:
    """An EC P-256 private key (PEM) generated once on this machine into the instance folder."""
    path = instance / f"{name}.pem"
    if not path.exists():
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        instance.mkdir(parents=True, exist_ok=True)
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return path.read_text().strip()
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
    return path.read_text().strip()


@dataclass
class Config:
    """Every setting the app reads. `Config.from_env()` fills it from CLINIC_*/standard vars."""

    ENV: str = "development"
    TESTING: bool = False
    INSTANCE_PATH: str = str(PROJECT_ROOT / "instance")
    SECRET_KEY: str = ""
    # JWTs for /api/v1: HMAC with a secret from configuration; fixed algorithm allow-list.
    JWT_SECRET: str = ""
    JWT_ALGORITHM: str = "HS256"
    JWT_EXPIRES_SECONDS: int = 900
    # Field encryption keys (Fernet, comma-separated, newest first) and the lookup-hash key.
    FIELD_KEYS: str = ""
    LOOKUP_KEY: str = ""
    DATABASE_URL: str = ""
    REDIS_URL: str = ""
    # Outbox jobs (clinic/core/jobs.py): RQ on Redis when REDIS_URL is set, else inline after commit
    JOBS_QUEUE: str = "clinic"
    JOBS_MAX_ATTEMPTS: int = 12  # 30 s doubling, capped at 1 h: about 5 h of retries before "dead"
    JOBS_BACKOFF_SECONDS: int = 30
    JOBS_BACKOFF_MAX_SECONDS: int = 3600
    # A running job holds a short lease that its worker renews every third of it while the
    # handler runs; a worker that dies stops renewing, and the sweeper (every 20 s in
    # `jobs worker`) runs the job again once the lease has passed: within a minute.
    JOBS_LEASE_SECONDS: int = 30
    # Pharmacy: review-queue claims expire; partner HTTP calls; the address partners call back
    PHARMACY_CLAIM_SECONDS: int = 900
    DRUG_FEE_FEN: int = 3000  # charged after approval when PAYMENTS=stripe (one fee per prescription)
    PARTNER_HTTP_TIMEOUT: int = 10
    # Partner endpoints on private/loopback addresses and plain http: development only (the
    # demo's partners and the tests' stand-ins listen on 127.0.0.1); always true there.
    PARTNER_PRIVATE_ENDPOINTS: bool = False
    PUBLIC_BASE_URL: str = "http://127.0.0.1:5000"
    TWILIO_SMS_FROM: str = "+10000000000"
    # Adapters
    SMS_BACKEND: str = "log"  # log | twilio
    TWILIO_ACCOUNT_SID: str = ""
    TWILIO_AUTH_TOKEN: str = ""
    TWILIO_VERIFY_SERVICE_SID: str = ""
    TWILIO_BASE_URL: str = ""  # tests point the real SDK at a local stand-in
    PAYMENTS: str = "off"  # off | stripe
    CONSULTATION_FEE_FEN: int = 2000
    RX_VALID_DAYS: int = 1  # a prescription not approved and dispensed within this many days expires (1-3)
    STRIPE_SECRET_KEY: str = ""
    STRIPE_WEBHOOK_SECRET: str = ""  # whsec_...: verifies Stripe-Signature on /webhooks/stripe
    STRIPE_API_BASE: str = ""  # empty: Stripe itself; tests point the real SDK at localstripe
    STRIPE_PUBLISHABLE_KEY: str = ""
    TWILIO_API_KEY_SID: str = ""
    TWILIO_API_KEY_SECRET: str = ""
    UPLOAD_DIR: str = ""  # uploaded files (encrypted); default <instance>/uploads
    MAX_DOCUMENT_BYTES: int = 10 * 1024 * 1024
    MAX_IMAGE_BYTES: int = 8 * 1024 * 1024
    # Uploads per account (diagnosis proofs, images in the visit room): files per window,
    # and bytes per day
    UPLOAD_COUNT_LIMIT: str = "30 per hour"
    UPLOAD_BYTES_PER_DAY: int = 200 * 1024 * 1024
    # Rate limits (Flask-Limiter notation)
    LOGIN_RATE_LIMIT: str = "10 per minute"  # per client address and account (every attempt)
    LOGIN_ADDRESS_RATE_LIMIT: str = "30 per minute"  # failed logins per client address, any account
    # Per account, from addresses it never logged in from: free failures, then waits doubling
    LOGIN_BACKOFF_FREE_FAILURES: int = 10
    LOGIN_BACKOFF_BASE_SECONDS: int = 30
    LOGIN_BACKOFF_MAX_SECONDS: int = 900
    LOGIN_BACKOFF_WINDOW_SECONDS: int = 3600  # failures are counted over this window
    LOGIN_KNOWN_ADDRESS_DAYS: int = 30  # an address the account logged in from is its "usual" one
    RATELIMIT_STORAGE_RETRY_SECONDS: int = 30  # storage down: memory, trying the storage again after this
    CODE_RATE_LIMIT: str = "5 per 10 minutes"  # code checks per account
    SMS_PHONE_RATE_LIMIT: str = "1 per minute; 5 per hour; 10 per day"  # codes sent to one phone
    # Registrations from one client address (a hospital's Wi-Fi is one address for a building);
    # only successful ones count
    REGISTER_ADDRESS_RATE_LIMIT: str = "200 per hour"
    # Requests to reclaim an ID number registered by someone else (identity/reclaims.py):
    # per client address, and per ID number whoever asks (counted whether it is registered)
    RECLAIM_ADDRESS_RATE_LIMIT: str = "20 per hour"
    RECLAIM_ID_RATE_LIMIT: str = "3 per day"
    RECLAIM_PHOTO_MAX_BYTES: int = 8 * 1024 * 1024
    OTP_TTL_SECONDS: int = 600
    OTP_MAX_ATTEMPTS: int = 5
    # Face verification of physicians (identity/face.py)
    FACE_FRESH_SECONDS: int = 600
    # Match when the encodings' distance <= FACE_TOLERANCE. face_recognition suggests 0.6; on our
    # test set (tests/unit/identity/test_face_accuracy.py: 5 people, 49 images) same-person pairs reach
    # 0.482 and different people start at 0.624, so 0.6 has a 0.02 margin against a false
    # accept; 0.55 sits midway (FAR 0/882, FRR 0/294 pairs).
    FACE_TOLERANCE: float = 0.55
    FACE_MAX_MISMATCHES: int = 5
    FACE_MAX_UPLOAD_BYTES: int = 10 * 1024 * 1024
    FACE_MAX_PIXELS: int = 40_000_000  # header check before decoding: more is refused as a bomb
    FACE_DETECT_MAX_SIDE: int = 640  # images are downscaled to this long side before detection
    # A detection counts as a face when it scores >= FACE_SURE_SCORE or >= this share of the best one
    FACE_MIN_SCORE_RATIO: float = 0.35
    FACE_SURE_SCORE: float = 0.4
    FACE_REPLAY_MAX_BITS: int = 40  # dHash (256 bits) distance at or under which an image is a replay (copies <= 22, other photos >= 87 in the test set)
    FACE_PHOTO_DIR: str = ""  # reference photos (encrypted), default <instance>/face_photos: never under static
    FACE_RATE_LIMIT: str = "20 per minute"
    # API calls without a (valid) Bearer token, per address: past this, 429 (and their
    # refusals are audited in aggregate: the 1st, 10th, 100th… of a minute)
    TOKENLESS_RATE_LIMIT: str = "120 per minute"
    # Regulators' interface (clinic/regulator): scoped-token lifetime, longest read window,
    # and who is told at once of a data-security incident or adverse event (SMS)
    REGULATOR_TOKEN_SECONDS: int = 300
    REGULATOR_MAX_WINDOW_DAYS: int = 31
    REGULATOR_CONTACT_PHONE: str = ""
    # The audit log (clinic/core/auditlog.py): its Ed25519 signing key (any secret string; a dev
    # key is generated into the instance folder), its origin line (default: PUBLIC_BASE_URL's
    # host + "/audit-log"), the maximum merge delay, how often a checkpoint is signed while
    # entries arrive, where each checkpoint is pushed (the regulator's endpoint, via the outbox),
    # and who sequences: "background" (a thread per process, woken by requests' commits, batching;
    # plus the `flask audit sequencer` loop in production), "commit" (in line after every
    # commit; tests) or "external" (only that loop)
    AUDIT_LOG_KEY: str = ""
    AUDIT_LOG_ORIGIN: str = ""
    AUDIT_MERGE_DELAY_SECONDS: float = 2.0
    AUDIT_CHECKPOINT_SECONDS: float = 60.0
    AUDIT_SEQUENCER: str = ""  # background (default) | commit (the default when TESTING) | external
    REGULATOR_CHECKPOINT_URL: str = ""
    # Between institutions (clinic/telemedicine): the institution's own ES256 key (PEM, EC P-256
    # private key) signing its messages to partner institutions; a dev key is generated into the
    # instance folder. FEDERATION_HTTP_TIMEOUT: seconds for one delivery to a partner.
    INSTITUTION_SIGNING_KEY: str = ""
    FEDERATION_HTTP_TIMEOUT: int = 10
    CONSULT_MAX_ATTACHMENT_BYTES: int = 5 * 1024 * 1024  # one consultation attachment: base64 in an 8 MB signed message
    # Uploads
    MAX_CONTENT_LENGTH: int = 12 * 1024 * 1024
    BABEL_DEFAULT_LOCALE: str = "zh_CN"
    # Browsers share cookies between ports of one host: two clinics side by side on
    # 127.0.0.1 (`make pair`) each need their own session cookie name.
    SESSION_COOKIE_NAME: str = "session"
    SESSION_COOKIE_SAMESITE: str = "Lax"
    SESSION_COOKIE_HTTPONLY: bool = True
    SESSION_COOKIE_SECURE: bool = False
    HSTS_MAX_AGE_SECONDS: int = 31536000  # Strict-Transport-Security in production (HTTPS answers)
    WTF_CSRF_ENABLED: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides: Any) -> Config:
        cfg = cls()
        for f in fields(cls):
            if f.name == "extra":
                continue
            raw = os.environ.get(f"CLINIC_{f.name}") or os.environ.get(f.name)
            if raw is None:
                continue
            current = getattr(cfg, f.name)
            if isinstance(current, bool):
                setattr(cfg, f.name, _bool(raw))
            elif isinstance(current, int):
                setattr(cfg, f.name, int(raw))
            elif isinstance(current, float):
                setattr(cfg, f.name, float(raw))
            else:
                setattr(cfg, f.name, raw)
        for key, value in overrides.items():
            if hasattr(cfg, key) and key != "extra":
                setattr(cfg, key, value)
            else:
                cfg.extra[key] = value
        cfg.finalize()
        return cfg

    def finalize(self) -> None:
        instance = Path(self.INSTANCE_PATH)
        production = self.ENV == "production"
        for name in ("SECRET_KEY", "JWT_SECRET", "LOOKUP_KEY"):
            if not getattr(self, name):
                if production:
                    raise RuntimeError(f"{name} must be set in production")
                setattr(self, name, _local_secret(instance, name.lower()))
        if not self.TWILIO_API_KEY_SECRET:
            if production and self.SMS_BACKEND == "twilio":
                raise RuntimeError("TWILIO_API_KEY_SECRET must be set in production")
            # Development: video tokens are signed with a local secret (valid shape, not accepted by Twilio).
            self.TWILIO_API_KEY_SECRET = _local_secret(instance, "twilio_api_key_secret")
            self.TWILIO_API_KEY_SID = self.TWILIO_API_KEY_SID or "SK" + "0" * 32
        self.TWILIO_ACCOUNT_SID = self.TWILIO_ACCOUNT_SID or "AC" + "0" * 32
        if not self.FIELD_KEYS:
            if production:
                raise RuntimeError("FIELD_KEYS must be set in production")
            from cryptography.fernet import Fernet

            path = instance / "field_keys.secret"
            if not path.exists():
                instance.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(Fernet.generate_key().decode())
            self.FIELD_KEYS = path.read_text().strip()
        if not self.INSTITUTION_SIGNING_KEY:
            if production:
                raise RuntimeError("INSTITUTION_SIGNING_KEY must be set in production")
            self.INSTITUTION_SIGNING_KEY = _local_ec_key(instance, "institution_signing_key")
        if not self.DATABASE_URL:
            instance.mkdir(parents=True, exist_ok=True)
            self.DATABASE_URL = f"sqlite:///{instance / 'clinic.sqlite3'}"
        self.SESSION_COOKIE_SECURE = self.SESSION_COOKIE_SECURE or production
        self.PARTNER_PRIVATE_ENDPOINTS = self.PARTNER_PRIVATE_ENDPOINTS or self.ENV == "development"

    def as_flask(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out.update(self.extra)
        out["RATELIMIT_STORAGE_URI"] = self.REDIS_URL or "memory://"
        out["RATELIMIT_HEADERS_ENABLED"] = True
        return out


_FIELDS = frozenset(f.name for f in fields(Config) if f.name != "extra")
DEFAULTS = Config()  # every setting at its default, unfinalized (no secrets, no instance folder)


class FlaskConfig(FlaskBaseConfig):
    """Flask's `app.config`, kept in step with the app's typed `Config`: a setting changed
    through `app.config[...]` (a test narrowing a limit, an extension's default) is what
    `settings()` then reads."""

    typed: Config | None = None

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        if self.typed is not None and key in _FIELDS:
            setattr(self.typed, key, value)

    def update(self, *args: Any, **kwargs: Any) -> None:  # dict.update bypasses __setitem__
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        if self.typed is not None and key in _FIELDS:  # removed: the typed field is its default again
            setattr(self.typed, key, getattr(DEFAULTS, key))

    def pop(self, key: str, *default: Any) -> Any:
        if key not in self:
            return super().pop(key, *default)
        value = self[key]
        del self[key]
        return value

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]


def bind(app: Flask, cfg: Config) -> None:
    """Make `cfg` the app's configuration: `app.config` mirrors it and `settings()` returns it."""
    flask_config = FlaskConfig(app.root_path, app.config)
    app.config = flask_config
    flask_config.update(cfg.as_flask())
    flask_config.typed = cfg
    app.extensions["clinic.config"] = cfg


def settings() -> Config:
    """The running app's configuration, typed: `settings().FACE_FRESH_SECONDS`. Code reads
    settings through this, never `current_app.config["..."]` strings."""
    from flask import current_app

    cfg: Config = current_app.extensions["clinic.config"]
    return cfg
