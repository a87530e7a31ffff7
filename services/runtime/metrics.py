"""What a service counts, for an operator to alert on (Prometheus text format, ``METRICS_PORT``).

One service runs per process, so the counters need no service label; the scrape target names it.
"""

from __future__ import annotations

import structlog
from prometheus_client import Counter, Gauge, start_http_server

log = structlog.get_logger()

EVENTS_APPLIED = Counter("rj_events_applied", "Events taken in and applied (repeats excluded)")
DEAD_LETTERS = Counter("rj_dead_letters", "Records dead-lettered, by the topic they came from", ["topic"])
TRANSIENT_FAILURES = Counter(
    "rj_transient_failures", "Failures of the infrastructure retried in place (alert on a rising rate)", ["operation"]
)
PARKED_EVENTS = Gauge("rj_parked_events", "Events waiting for an upgrade of this service (alert when above 0)")
COMMAND_ANSWERS = Counter(
    "rj_command_answers", "Commands answered by the runtime itself (unknown type, malformed, repeated)", ["kind"]
)


def serve(port: int, address: str) -> None:
    """Expose the metrics on ``address:port`` (port 0: not at all)."""
    if port:
        start_http_server(port, addr=address)
        log.info("metrics_serving", port=port)
