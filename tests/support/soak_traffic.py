"""Upstream traffic for the soak (issue 21): crimes from two forces as their records systems publish them on
``crime.events``, with what goes wrong upstream in real life mixed in, and what each crime must become.

The mix, decided by each crime's index (so the same size gives the same traffic): most crimes have an offender who
admits responsibility (a case, accepted); some do not (no case, or a declined one when someone asked for RJ); some
are sensitive (a hate crime or domestic abuse: a specialist and a risk assessment first); some outcomes come before
their crime (out of order); some records come twice (the same event id: an upstream repeat); some offenders offend
again (a later crime names an earlier crime's offender); and about 1% of the records are malformed (not JSON, a
tombstone, a CloudEvents version or a payload version we do not know, a field of the wrong type).

Every personal value carries the run's ``Marker`` (or is one of its phones and dates of birth), so a scan of what
the services write finds any of them left in clear.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from demo import samples
from schemas import topics
from schemas.common import Channel, Contact
from schemas.upstream import Offender, RiskFlag, Victim

FORCE_A = samples.UPSTREAM_SOURCE  # West Mercia, the samples' force
FORCE_B = "urn:police:warwickshire:rms"
PREFIX = {FORCE_A: "WM", FORCE_B: "WK"}

Record = tuple[str, bytes, bytes | None]  # logical topic, key, value (None: a tombstone)


@dataclass(frozen=True)
class Marker:
    """What makes this run's personal data findable: a token in every name, address and email, and the phones and
    dates of birth every participant has."""

    token: str = field(default_factory=lambda: f"qzv{uuid.uuid4().hex[:8]}")
    victim_phone: str = "+447700987654"
    offender_phone: str = "+447700123987"
    victim_born: date = date(1979, 3, 14)
    offender_born: date = date(1983, 11, 27)

    def needles(self) -> dict[str, str]:
        """What must never be found in clear in anything we write, by what it is."""
        return {
            "a name, address or email of this run": self.token,
            "a victim's phone": self.victim_phone,
            "an offender's phone": self.offender_phone,
            "a victim's date of birth": self.victim_born.isoformat(),
            "an offender's date of birth": self.offender_born.isoformat(),
        }


@dataclass(frozen=True)
class Crime:
    index: int
    force: str
    ref: str
    admitted: bool  # the offender admits responsibility
    requested: bool  # someone asked for RJ (a referral request upstream)
    sensitive: bool
    offender_id: str  # ``O-<ref>``, or an earlier crime's offender (a reoffence)
    victim_email: str
    offender_email: str

    @property
    def case_id(self) -> str:
        return samples.case_of(self.ref, self.force)

    @property
    def victim_id(self) -> str:
        return f"V-{self.ref}"

    @property
    def people(self) -> list[str]:
        """The case's required participants: its victim and its offender."""
        return [self.victim_id, self.offender_id]

    @property
    def opens_a_case(self) -> bool:
        return self.admitted or self.requested

    @property
    def expected_status(self) -> set[str]:
        """What the referral service's file of the crime must end as (an accepted case may be closed since)."""
        if self.admitted:
            return {"accepted", "closed"}
        return {"declined"} if self.requested else {"no_case"}


@dataclass(frozen=True)
class Malformed:
    key: bytes
    value: bytes | None
    what: str


@dataclass
class Traffic:
    crimes: list[Crime]
    records: list[Record]  # in the order upstream publishes them, malformed ones among them
    event_ids: set[str]  # every distinct well-formed event
    malformed: list[Malformed]

    def chunks(self, n: int) -> list[list[Record]]:
        size = len(self.records) // n + 1
        return [self.records[i : i + size] for i in range(0, len(self.records), size)]


def generate(crimes: int, marker: Marker, seed: int = 21) -> Traffic:
    """``crimes`` crimes, two thirds from force A, a third from force B, in a realistic shuffled order."""
    rng = random.Random(seed)
    token = marker.token
    # Reported within the last day: no Victims' Code deadline falls due during the run.
    reported = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    made: list[Crime] = []
    per_crime: list[list[Record]] = []
    for i in range(crimes):
        force = FORCE_B if i % 3 == 2 else FORCE_A
        ref = f"{PREFIX[force]}/2026/SK{i:05d}"
        earlier = made[i - 9] if i >= 9 and i % 20 == 19 and made[i - 9].force == force else None
        crime = Crime(
            index=i,
            force=force,
            ref=ref,
            admitted=i % 6 != 5,
            requested=i % 5 == 4,
            sensitive=i % 8 == 3,
            offender_id=earlier.offender_id if earlier else f"O-{ref}",
            victim_email=f"v{i}.{token}@example.org",
            offender_email=earlier.offender_email if earlier else f"o{i}.{token}@example.net",
        )
        made.append(crime)
        victim = Victim(
            person_id=crime.victim_id,
            name=f"Philippa Quennell-{token} {i}",
            date_of_birth=marker.victim_born,
            contact=Contact(email=crime.victim_email, phone=marker.victim_phone, address=f"{i} Larkspur Mews {token}"),
            preferred_channel=Channel.email,
        )
        payloads = [
            samples.crime_recorded(ref, victims=[victim], reported_at=reported + timedelta(seconds=i)),
            samples.outcome_recorded(
                ref,
                admitted=crime.admitted,
                offender=crime.offender_id,
                risk_flags=[[RiskFlag.hate_crime, RiskFlag.domestic_abuse][i % 2]] if crime.sensitive else [],
            ),
        ]
        offender = Offender(
            person_id=crime.offender_id,
            name=f"Bartholomew Ashdown-{token} {crime.offender_id}",
            date_of_birth=marker.offender_born,
            contact=Contact(email=crime.offender_email, phone=marker.offender_phone),
        )
        payloads[1] = payloads[1].model_copy(update={"offender": offender})
        if i % 4 == 1:
            payloads.reverse()  # the outcome before the crime it is about
        if crime.requested:
            payloads.insert(rng.randrange(len(payloads) + 1), samples.referral_requested(ref))
        records: list[Record] = [(t, k.encode(), v) for t, k, v in samples.on_crime_events(*payloads, force=force)]
        if i % 10 == 3:
            records.insert(rng.randrange(1, len(records) + 1), rng.choice(records))  # an upstream repeat
        per_crime.append(records)

    # Interleave the crimes as upstream's many writers do, each crime's own records staying in order (they
    # share a key, so a partition); then the malformed ones, about 1% of all, at random places.
    ordered: list[Record] = []
    queues = [list(r) for r in per_crime]
    while any(queues):
        window = [q for q in queues[:12] if q]
        queue = rng.choice(window)
        ordered.append(queue.pop(0))
        queues = [q for q in queues if q]
    event_ids = {json.loads(v)["id"] for _, _, v in ordered if v is not None}
    malformed = malformed_records(max(5, round(len(ordered) / 100)), made[0])
    for bad in malformed:
        ordered.insert(rng.randrange(len(ordered) + 1), (topics.CRIME_EVENTS, bad.key, bad.value))
    return Traffic(made, ordered, event_ids, malformed)


def malformed_records(n: int, crime: Crime) -> list[Malformed]:
    """``n`` records upstream got wrong, each of one of five kinds in turn, each under a key and an id of its own
    (a second record with the same id would be a repeat of the first, not another dead letter)."""

    def good() -> bytes:
        return samples.upstream_event(samples.crime_recorded(f"BAD/{crime.ref}"), force=crime.force)

    kinds = [
        ("not JSON", lambda: b'{"specversion": "1.0", "type": "crime.recorded", oops'),
        ("a tombstone", lambda: None),
        ("CloudEvents 0.3", lambda: good().replace(b'"specversion":"1.0"', b'"specversion":"0.3"')),
        (
            "a payload version no upcaster reads (v0)",
            lambda: good().replace(b'"subject":', b'"dataschema":"urn:rj:schema:crime.recorded:v0","subject":', 1),
        ),
        ("a time that is not one", lambda: good().replace(b'"reported_at":"', b'"reported_at":"soon ', 1)),
    ]
    return [Malformed(f"BAD/{i}".encode(), kinds[i % len(kinds)][1](), kinds[i % len(kinds)][0]) for i in range(n)]
