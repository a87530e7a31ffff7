"""The API service's Faust app: the read model staff UIs read, kept from the case topics.

rj.referral, rj.consent, rj.scheduling, rj.privacy (every fact, and every answer to a command)
    ──► readmodel.take_in ──► schema api (cases, participants, consents, meetings, agreement items, deadlines,
                                          indirect items, contact log, notes, timeline, command answers)

Its outbox (the view log, participant-link settings, the commands staff send) goes to rj.api and rj.commands through
the runtime's relay, like every service's. The HTTP server runs in the same process; it is wired beside this.
"""

from __future__ import annotations

from schemas import topics
from services.api import readmodel
from services.runtime.app import ServiceApp
from services.runtime.settings import Settings

TOPICS_IN = (topics.REFERRAL, topics.CONSENT, topics.SCHEDULING, topics.PRIVACY)


class ApiService(ServiceApp):
    """The ``api`` service: a ``ServiceApp`` with schema ``api`` whose intake keeps the read model."""

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__("api", migrations="services.api.migrations", settings=settings)


def build(service: ServiceApp | None = None) -> ServiceApp:
    service = service or ApiService()
    service.consume(list(TOPICS_IN), consumes=readmodel.CONSUMES, handler=readmodel.take_in)
    return service
