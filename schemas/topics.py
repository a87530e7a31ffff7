"""Topic names. Each service writes only its own topic; everything about a case is keyed by its case id."""

from typing import Final

CRIME_EVENTS: Final = "crime.events"  # upstream's, keyed by crime reference
COMMANDS: Final = "rj.commands"  # keyed by case id; published by the API and downstream UIs
REFERRAL: Final = "rj.referral"
CONSENT: Final = "rj.consent"
SCHEDULING: Final = "rj.scheduling"
NOTIFY: Final = "rj.notify"
DEADLETTER: Final = "rj.deadletter"

ALL_TOPICS: Final = (CRIME_EVENTS, COMMANDS, REFERRAL, CONSENT, SCHEDULING, NOTIFY, DEADLETTER)
