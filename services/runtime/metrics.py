"""What a service counts, for an operator to alert on (Prometheus text format at ``/metrics`` on ``OPS_PORT``).

One service runs per process (its relay in a child process reports here), so the metrics need no service
label; the scrape target names it.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# --- intake ---------------------------------------------------------------------------------------
EVENTS_CONSUMED = Counter("rj_events_consumed", "Records taken from Kafka by the intake, by topic", ["topic"])
EVENTS_APPLIED = Counter("rj_events_applied", "Events taken in and applied (repeats excluded)")
BATCH_SIZE = Histogram(
    "rj_batch_size", "Records per batch the intake committed", buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
)
BATCH_DURATION = Histogram(
    "rj_batch_duration_seconds",
    "From a batch's records being taken to their offsets being committable (parse, decide, PostgreSQL)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CONSUMER_LAG = Gauge(
    "rj_consumer_lag", "Records on the partition not yet committed by this replica", ["topic", "partition"]
)
DEAD_LETTERS = Counter("rj_dead_letters", "Records dead-lettered, by the topic they came from", ["topic"])
TRANSIENT_FAILURES = Counter(
    "rj_transient_failures", "Failures of the infrastructure retried in place (alert on a rising rate)", ["operation"]
)
RETRIES_IN_PROGRESS = Gauge(
    "rj_retries_in_progress", "Operations waiting to be retried after a transient failure, now", ["operation"]
)
PARKED_EVENTS = Gauge("rj_parked_events", "Events waiting for an upgrade of this service (alert when above 0)")
COMMAND_ANSWERS = Counter(
    "rj_command_answers",
    "Commands answered by the runtime itself (unknown type, malformed, repeated, changing nothing)",
    ["kind"],
)

# --- outbox and relay -------------------------------------------------------------------------------
EVENTS_PUBLISHED = Counter("rj_events_published", "Outbox rows the relay published, by topic", ["topic"])
OUTBOX_BACKLOG = Gauge("rj_outbox_backlog", "Outbox rows not yet published (parked ones excluded)")
OUTBOX_OLDEST_AGE = Gauge("rj_outbox_oldest_age_seconds", "Age of the oldest outbox row not yet published (0: none)")
OUTBOX_PARKED = Gauge("rj_outbox_parked", "Outbox rows that can never be published, parked (alert when above 0)")
RELAY_LEADER = Gauge("rj_relay_leader", "1 while this replica's relay holds the lease and publishes")
RELAY_RUNNING = Gauge("rj_relay_running", "1 while this replica's relay process is alive and reporting")

# --- the process ------------------------------------------------------------------------------------
EVENT_LOOP = Gauge("rj_event_loop", "1 for the event loop this process runs on (Settings.event_loop)", ["loop"])

# --- housekeeping -----------------------------------------------------------------------------------
PRUNED = Counter("rj_pruned_rows", "Rows deleted by housekeeping, past the retention window, by table", ["table"])

# --- the domain -------------------------------------------------------------------------------------
RJ_INFORMATION_BEFORE_CONTACT_ALLOWED = Counter(
    "rj_victim_information_before_contact_allowed",
    "RJ information recorded as given on a sensitive case before a risk assessment allowed contact (safeguarding)",
)
SAFE_CONTACT_BREACHES = Counter(
    "rj_safe_contact_breaches",
    "Contact attempts recorded that broke the person's safe-contact record (safeguarding: alert on any)",
)
VICTIMS_CODE_DEADLINES = Gauge(
    "rj_victims_code_deadlines", "Victims' Code deadlines now open, by state (due, overdue)", ["state"]
)
