"""Topic names. Each service writes only its own topic; everything about a case is keyed by its case id."""

from typing import Final

CRIME_EVENTS: Final = "crime.events"  # upstream's, keyed by crime reference
COMMANDS: Final = "rj.commands"  # keyed by case id; published by the API and downstream UIs
REFERRAL: Final = "rj.referral"
CONSENT: Final = "rj.consent"
SCHEDULING: Final = "rj.scheduling"
NOTIFY: Final = "rj.notify"
PRIVACY: Final = "rj.privacy"
API: Final = "rj.api"  # the API's own facts: the view log (rule 8), participant-link settings
DEADLETTER: Final = "rj.deadletter"
AUDIT: Final = "rj.audit"  # the audit log's signed tree heads, keyed by the log id

ALL_TOPICS: Final = (CRIME_EVENTS, COMMANDS, REFERRAL, CONSENT, SCHEDULING, NOTIFY, PRIVACY, API, DEADLETTER, AUDIT)

#: The topic each service publishes its facts to (and its answers to commands: rejections, repeats).
OUTPUT_OF: Final = {
    "referral": REFERRAL,
    "consent": CONSENT,
    "scheduling": SCHEDULING,
    "privacy": PRIVACY,
    "api": API,
    "notify": NOTIFY,
}

#: For each topic, the one service that answers for a record no service can read (a tombstone, bytes
#: that are not a CloudEvent, an event type the contract does not know). Every other reader of the topic
#: passes over it, so one bad record becomes one dead letter (or one ``rj.command.rejected``), not
#: one per reader.
STEWARD_OF: Final = {
    CRIME_EVENTS: "referral",
    COMMANDS: "referral",
    REFERRAL: "consent",
    CONSENT: "scheduling",
    SCHEDULING: "consent",
    PRIVACY: "privacy",  # no other service reads it yet: the privacy service reads its own to answer for it
    NOTIFY: "api",  # its only reader: the API's read model (the case page's notifications)
    API: "api",  # the API's own (views logged, links used): it reads it back for its read model
}

CASE_KEYED: Final = (COMMANDS, REFERRAL, CONSENT, SCHEDULING, NOTIFY, PRIVACY, API)
"""Topics keyed by case id: a case's records share a partition number on all of them (so a lane) only when they
all have the same partition count."""
