"""All configuration, read once from environment variables. The same names work against Apache Kafka."""

from __future__ import annotations

import asyncio
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/rj"
    # Prepended to every topic and consumer group: lets tests and demos run side by side on one broker.
    topic_prefix: str = ""
    topic_partitions: int = Field(default=4, ge=1)
    topic_replication_factor: int = Field(default=1, ge=1)

    # Short group timeouts make joins take ~3 s instead of ~25 s; production keeps Kafka's defaults.
    kafka_session_timeout_s: float = 6.0
    kafka_rebalance_timeout_s: float = 4.0
    kafka_heartbeat_interval_s: float = 1.0

    batch_size: int = Field(default=500, ge=1)
    # How long the broker may hold a fetch when no partition has anything new. Kafka answers such a long poll as
    # soon as a record arrives; on Tansu 0.6 that does not always hold: bench.latency's consumer (no group, every
    # partition of a scratch topic) waiting 200 ms instead of 5 saw the broker round trip at p50 49 ms, at most
    # 102 ms (3 and 7 ms at 5 ms), so part of this wait can be paid by a hop. And a partition whose records are still
    # being handed over is left out of the fetch in flight (aiokafka sends one fetch at a time to a broker), and
    # its next records wait for that fetch to come back: under load a hop can wait up to this long. Measured on
    # Tansu, 24 partitions, a record every 0.37 s, CPU of one consumer in 4.4 s: 10 ms: hop 3-6 ms, 0.41 s (a
    # tenth of a core asking an idle broker, all day, in every service); 50 ms: 16-21 ms, 0.12 s; 500 ms: 8 ms,
    # 0.04 s, but at 50 cases/s referral's intake then lagged 0-260 ms (uniformly: the fetch in flight).
    fetch_max_wait_ms: int = Field(default=50, ge=0)
    # The same for the followers (audit, the API's read model): services that no latency target reads through,
    # which follow busy topics (audit every one). Privacy is not one: a participant's corrected contact details and
    # an erasure reach notify through it. A staff action's outcome, which the API reads from its read model, shows a
    # follower's hop later. Measured (bench.capacity, every service running, 15 cases/s, the same ladder): followers
    # at 50 ms, 1.85 cores and p99 639 / 831 ms (missed); at 500 ms, 1.28 cores and 124 / 154 ms. Every consumer at
    # 500 ms used 0.89 cores, but then each hop of a case's path could wait half a second.
    follower_fetch_max_wait_ms: int = Field(default=500, ge=0)
    fetch_max_partition_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Offsets go to Kafka at most this often while batches are applied (and at once when partitions move or the
    # consumer stops). Where to resume is first what was stored with the data (``consumer_positions``, in each
    # batch's own transaction), so a commit held back costs nothing after a crash; every commit is a request the
    # broker and the client work through (at 30 cases/s, one for every batch of every service).
    offset_commit_interval_s: float = Field(default=1.0, ge=0)
    db_pool_size: int = Field(default=4, ge=1)
    relay_batch_size: int = Field(default=1000, ge=1)
    relay_poll_interval_s: float = 0.5
    # The relay leader holds a lease in PostgreSQL for this long and renews it every third of it; a leader
    # that hangs (or is frozen) is replaced once its lease has expired.
    relay_lease_s: float = Field(default=3.0, gt=0)
    # The largest record the relay sends (key and value); a larger outbox row is parked, never sent. Kafka's
    # own limit (message.max.bytes) is 1 MiB by default; keep this at or under the broker's.
    max_message_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Every database session: how long one statement may run, and TCP keepalives that notice a dead peer.
    db_statement_timeout_s: float = Field(default=30.0, gt=0)
    db_keepalive_idle_s: int = Field(default=5, ge=1)
    # How long a session keeps a prepared statement (and so the plan PostgreSQL settled on for it) before preparing
    # it again. A plan is made for the tables as they were: one settled while a table was nearly empty (a fresh
    # database, the first minutes of a deployment) scans it whole for as long as the statement is kept, however big
    # it grows (measured: a key lookup at 6.8 ms instead of 0.3 ms over 30,000 keys). 0: kept for ever.
    db_statement_replan_s: float = Field(default=30.0, ge=0)
    retry_max_backoff_s: float = 5.0
    # How often to look for parked events this version can now apply (and refresh the parked gauge).
    parked_check_interval_s: float = 5.0

    # The operations endpoint: /health/live, /health/ready and /metrics (Prometheus, rj_*). 0 serves
    # none; containers set a port and 0.0.0.0.
    ops_port: int = Field(default=0, ge=0)
    ops_address: str = "127.0.0.1"

    # Topics: ours (rj.*) are the system's log and kept for ever; upstream's crime.events, and the copies
    # on rj.deadletter (each kept whole in PostgreSQL), for this long (-1: for ever).
    crime_events_retention_ms: int = Field(default=30 * 24 * 3600 * 1000, ge=-1)
    deadletter_retention_ms: int = Field(default=30 * 24 * 3600 * 1000, ge=-1)

    # Housekeeping: published outbox rows and inbox ids older than this are deleted (see the README for
    # the rule this window must follow), checked every interval.
    retention_window_s: float = Field(default=30 * 24 * 3600, gt=0)
    housekeeping_interval_s: float = Field(default=60.0, gt=0)

    # The Victims' Code sweeper: how often to look for deadlines that passed unmet.
    deadline_sweep_interval_s: float = 5.0

    # The RJ process (DOMAIN stages 3 to 7): attempts since a participant was last reached before a case may be
    # closed as uncontactable; working days before an agreement item's due date that it is flagged due soon.
    uncontactable_after_attempts: int = Field(default=3, ge=1)
    item_due_soon_working_days: int = Field(default=3, ge=0)

    # The key store's master keys (see services/runtime/keystore.py), never stored in the database:
    # ``version:base64key`` entries, comma-separated, the first being the one new data keys are wrapped
    # under; or a file holding the same. Keep older versions listed until a rotation has re-wrapped
    # every data key under the current one.
    master_keys: SecretStr = SecretStr("")
    master_key_file: Path | None = None
    # Personal data is encrypted wherever a service writes it (services/runtime/privacy.py). Off only to
    # measure what encryption costs (bench/intake.py); a service without master keys refuses to start.
    pii_encryption: bool = True

    # The event loop every service process (its worker and its relay) runs on. uvloop (libuv, from the authors of
    # asyncpg) does the same work for less CPU: a PostgreSQL round trip cost a client 52 us of CPU instead of 61,
    # and the whole system 5% fewer cores at 20 cases/s (bench.capacity, two runs each). ``asyncio``: the
    # standard library's, e.g. to tell a loop problem from ours.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"

    # How long personal data is kept after a case closes, per outcome and role (the privacy service's
    # retention schedule): JSON mapping "outcome/role" (either may be "*") to a period such as "24 months".
    retention_schedule: str = '{"*": "24 months"}'
    # Someone who declines or withdraws from taking part is erased on the case this long after the decline is
    # recorded, the case open or closed, unless they consent again first (rule 7; decided by the consent service,
    # carried out by the privacy service): every service, the notify service sending the closure notice among
    # them, acts on the decline before how to reach them goes.
    declined_erasure_delay_s: float = Field(default=7 * 24 * 3600, ge=0)

    # Participants' withdraw links (services/api/links.py): the AES-256 key that seals each link, base64 of 32
    # bytes; several comma-separated while rotating (the first seals new links, every one opens old ones). Empty:
    # no link can be made or opened. Anyone holding it can make a link, so it is kept like the master keys.
    participant_link_key: SecretStr = SecretStr("")
    # How long a link works after it was made; a used link never works again.
    participant_link_ttl_s: float = Field(default=28 * 24 * 3600, gt=0)
    # Where "Leave this page quickly" takes someone: an ordinary page that says nothing about why they left.
    participant_link_exit_url: str = "https://www.bbc.co.uk/weather"
    # The address participants reach the API at, as links in their messages spell it (no trailing slash needed).
    public_base_url: str = "http://127.0.0.1:8080"
    # Where the api service serves HTTP (staff UIs, the console, participants' links); behind a TLS proxy in
    # production, which ``public_base_url`` names.
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=0, le=65535)
    # The HTTP side's own database connections (the read model's intake keeps ``db_pool_size`` of its own).
    api_db_pool_size: int = Field(default=8, ge=1)
    # The largest request body the API reads (413 above it): a handler holds a body whole in memory, and a command
    # much larger than this could not be published to Kafka anyway. The largest legitimate body is a few kB.
    api_max_body_bytes: int = Field(default=256 * 1024, gt=0)
    # The web console (services/api/console.py), served by the API under /console: the AES-256 key (base64 of 32
    # bytes) that seals its session cookie (the access token and the form token); several comma-separated while
    # rotating (the first seals). Empty: a key made at start, so sessions end when the API restarts and every
    # replica needs the same key set (``rj dev`` keeps one in its state directory). ``console_client_id`` is the
    # console's client id at the identity provider, which sends staff back to PUBLIC_BASE_URL/console/callback.
    console_session_key: SecretStr = SecretStr("")
    console_client_id: str = "rj-console"
    # Login (services/api/auth.py): the force's OpenID Connect identity provider. The API accepts its access
    # tokens signed with a key its JWKS publishes (RS256 or ES256), for ``oidc_audience``, from ``oidc_issuer``
    # exactly as the token's ``iss`` says it. Empty issuer: the API refuses to start (``rj dev`` sets both to
    # its local issuer). The claim names may be dotted paths into nested claims (``realm_access.roles``).
    oidc_issuer: str = ""
    oidc_jwks_url: str = ""
    oidc_audience: str = "rj-api"
    oidc_staff_id_claim: str = "sub"
    oidc_role_claim: str = "roles"
    oidc_force_claim: str = "rj_force"
    oidc_name_claim: str = "name"
    # Clocks differ between the identity provider and us: how far past ``exp`` or before ``nbf`` still counts.
    oidc_clock_skew_s: float = Field(default=30.0, ge=0)
    # The JWKS is kept this long; a token naming a key not in it refetches the set at most once per
    # ``oidc_jwks_refetch_s`` (a key rotation is picked up within that; made-up key ids cannot flood the IdP).
    oidc_jwks_cache_s: float = Field(default=300.0, gt=0)
    oidc_jwks_refetch_s: float = Field(default=5.0, ge=0)
    oidc_jwks_timeout_s: float = Field(default=5.0, gt=0)
    # The embedded stack's local issuer (services/api/issuer.py): its signing key (made on first use, 0600)
    # and its port on 127.0.0.1. ``rj dev`` serves it and ``rj token`` mints with the same file and URL.
    dev_issuer_key_file: Path = Path(".rj/issuer.pem")
    dev_issuer_port: int = Field(default=8780, ge=1, le=65535)

    # The audit log (services/audit): how often it signs a tree head, the Ed25519 key it signs with (made on
    # first use, 0600; back it up: heads it signed verify only with it), and the witness file every signed
    # head is appended to as a JSON line: the file handed to the force's data protection officer, who keeps
    # it out of our reach so that a rewritten log is caught against heads we can no longer change.
    audit_head_interval_s: float = Field(default=60.0, gt=0)
    audit_signing_key_file: Path = Path(".rj/audit-log-key.pem")
    audit_witness_file: Path = Path(".rj/audit-witness.jsonl")
    # `rj audit verify`'s worker processes, each checking ranges of the log over a connection of its own: 0 is one
    # a core (at most 8) for a log of 98,304 entries or more, else none; 1 checks it all in rj's own process.
    audit_verify_workers: int = Field(default=0, ge=0)

    # The notify service (services/notify): when messages may reach people (Europe/London; see quiet_hours.py for
    # the form; empty: Monday to Friday 08:00-20:00, Saturday 09:00-17:00, never Sundays or bank holidays), how long
    # before a meeting its reminder goes, how often the sender looks for due messages besides being woken by
    # intake, how many it sends at once, and how long a send may stay claimed before it counts as in doubt (the
    # process that claimed it died mid-send). A facilitator with no email registered is written to at
    # NOTIFY_STAFF_EMAIL_FORMAT ({id} is their id). Participants' messages name the hub and its phone number.
    # NOTIFY_COORDINATOR_EMAIL: the hub's coordinators' mailbox, told of a delivery problem on a case no facilitator
    # is assigned to yet (the victim's information goes before anyone is) and of a staff message that failed
    # (empty: NOTIFY_STAFF_EMAIL_FORMAT with the id "coordinator").
    notify_quiet_hours: str = ""
    notify_meeting_reminder_hours: float = Field(default=48.0, gt=0)
    notify_poll_interval_s: float = Field(default=1.0, gt=0)
    notify_send_concurrency: int = Field(default=16, ge=1)
    notify_send_lease_s: float = Field(default=120.0, gt=0)
    notify_retry_max_s: float = Field(default=3600.0, gt=0)
    notify_max_tries: int = Field(default=12, ge=1)
    notify_staff_email_format: str = "{id}@rj-hub.example"
    notify_coordinator_email: str = ""
    notify_service_name: str = "West Mercia Restorative Justice Hub"
    notify_service_phone: str = "01905 000000"
    # The notify service's channels (services/notify/channels/). Email goes over SMTP or GOV.UK Notify; SMS always
    # through GOV.UK Notify (none without its API key and SMS template); letters into the queue a caseworker prints
    # from, or through GOV.UK Notify (large print letters stay in the queue: Notify prints its own type size).
    notify_email_via: Literal["smtp", "govuk"] = "smtp"
    notify_letters_via: Literal["queue", "govuk"] = "queue"
    # SMTP: the force's relay. TLS "starttls" upgrades a plain connection (port 587), "tls" is TLS from the first
    # byte (port 465), "none" only for a relay on the same host. ``notify_smtp_ca_file``: a CA bundle to trust
    # instead of the system's (a force's own CA). Login only when a username is set.
    notify_smtp_host: str = "127.0.0.1"
    notify_smtp_port: int = Field(default=587, ge=1, le=65535)
    notify_smtp_tls: Literal["none", "starttls", "tls"] = "starttls"
    notify_smtp_username: str = ""
    notify_smtp_password: SecretStr = SecretStr("")
    notify_smtp_ca_file: Path | None = None
    notify_smtp_timeout_s: float = Field(default=15.0, gt=0)
    # Connections kept open to the relay and reused (a TLS handshake and login per message costs more than the
    # message); at most this many at once.
    notify_smtp_connections: int = Field(default=4, ge=1)
    notify_smtp_idle_s: float = Field(default=30.0, gt=0)
    notify_from_address: str = "rj-hub@localhost"
    # Each email's Message-ID is <its outside reference@this domain> (default: the from address's domain).
    notify_message_id_domain: str = ""
    #: What a message's outside reference (GOV.UK Notify's ``reference``, the SMTP ``Message-ID``) is an HMAC
    #: of its notification id under: base64 of 32 bytes, comma-separated while rotating (the first signs).
    notify_reference_key: SecretStr = SecretStr("")
    # GOV.UK Notify: the service's API key ({key name}-{service id}-{secret}); one generic template per channel
    # that the force sets up once, whose content is ((subject)) and ((body)) (SMS: ((body))). Its rate limit is
    # 3,000 a minute per key: the client keeps under ``govuk_notify_rate_per_s`` itself, and after a 429 waits
    # the Retry-After Notify gives, else ``govuk_notify_retry_after_s``.
    govuk_notify_api_key: SecretStr = SecretStr("")
    govuk_notify_base_url: str = "https://api.notifications.service.gov.uk"
    govuk_notify_email_template_id: str = ""
    govuk_notify_sms_template_id: str = ""
    govuk_notify_letter_template_id: str = ""
    govuk_notify_rate_per_s: float = Field(default=40.0, gt=0)
    govuk_notify_retry_after_s: float = Field(default=60.0, gt=0)
    govuk_notify_timeout_s: float = Field(default=20.0, gt=0)

    log_level: str = "info"
    log_format: str = Field(default="console", pattern="^(console|json)$")

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def as_env(self) -> dict[str, str]:
        """These settings as the environment a service process reads them from (secrets included)."""
        env = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            env[name.upper()] = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        return env


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def use_event_loop(settings: Settings) -> None:
    """Make ``settings.event_loop`` the loop this process creates from now on (before any loop is made)."""
    if settings.event_loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    else:
        asyncio.set_event_loop_policy(None)
