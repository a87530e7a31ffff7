"""Rule 7 for someone who declines, pure: the age band kept of a date of birth, the monitoring key that
outlives a person's erasure on a case, and the privacy service's decision on a decline."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from demo import samples
from schemas.common import Actor
from schemas.consent import PARTICIPATION, ConsentDeclined, RecordedThrough, RecordingMethod
from schemas.privacy import KEPT_FOR_MONITORING, DeclinedParticipantErased
from schemas.referral import AgeBand, Participant, age_band_on
from services.privacy.domain import RECTIFIABLE, declined_participant_erased
from services.referral import domain as referral
from services.runtime.fieldcrypt import cipher_for
from services.runtime.keystore import MONITORING_PERSON, DataKey, KeyCache, KeyStore, MasterKeys, PersonCase

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
STAFF = Actor(kind="staff", id="facilitator-1")
CASE = "C-1"

# --- the age band ---------------------------------------------------------------------------------

BANDS = [
    (0, 17, AgeBand.under_18),
    (18, 24, AgeBand.from_18_to_24),
    (25, 34, AgeBand.from_25_to_34),
    (35, 44, AgeBand.from_35_to_44),
    (45, 54, AgeBand.from_45_to_54),
    (55, 64, AgeBand.from_55_to_64),
    (65, 200, AgeBand.from_65),
]


def age(born: date, day: date) -> int:
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


@given(st.dates(min_value=date(1850, 1, 1), max_value=date(2100, 12, 31)), st.integers(0, 120 * 366))
def test_rule_7_the_age_band_is_the_band_of_the_age_on_the_reported_date(born: date, days: int) -> None:
    day = date.fromordinal(min(born.toordinal() + days, date(2199, 12, 31).toordinal()))
    band = age_band_on(born, day)
    (expected,) = [b for low, high, b in BANDS if low <= age(born, day) <= high]
    assert band is expected


@pytest.mark.parametrize(
    ("born", "day", "band"),
    [
        (date(2008, 3, 3), date(2026, 3, 2), AgeBand.under_18),  # 18 tomorrow
        (date(2008, 3, 2), date(2026, 3, 2), AgeBand.from_18_to_24),  # 18 today
        (date(2001, 3, 2), date(2026, 3, 2), AgeBand.from_25_to_34),
        (date(1961, 3, 2), date(2026, 3, 2), AgeBand.from_65),
        (date(2008, 2, 29), date(2026, 2, 28), AgeBand.under_18),  # a leap-day birthday comes on 1 March
        (None, date(2026, 3, 2), None),  # unknown date of birth: no band
        (date(2027, 1, 1), date(2026, 3, 2), None),  # born after the report: upstream's error, no band
    ],
)
def test_rule_7_the_age_band_at_its_edges(born: date | None, day: date, band: AgeBand | None) -> None:
    assert age_band_on(born, day) is band


def test_rule_7_the_referral_gives_each_participant_the_monitoring_data_upstream_gives() -> None:
    ref = "WM/2026/700001"
    reported = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    victim = samples.victim(f"V-{ref}", born=date(2000, 6, 1)).model_copy(
        update={"gender": "female", "ethnicity": "W1"}
    )
    file = referral.CrimeFile(crime_reference=ref, force=samples.UPSTREAM_SOURCE)
    file, _ = referral.record_crime(file, samples.crime_recorded(ref, victims=[victim], reported_at=reported), NOW)
    file, _ = referral.record_outcome(file, samples.outcome_recorded(ref), NOW)  # offender born 1999-01-01
    by_id = {p.person_id: p for p in referral.participants(file)}
    assert (by_id[victim.person_id].age_band, by_id[victim.person_id].gender) == (AgeBand.from_25_to_34, "female")
    assert by_id[victim.person_id].ethnicity == "W1"
    assert by_id[f"O-{ref}"].age_band is AgeBand.from_25_to_34
    assert (by_id[f"O-{ref}"].gender, by_id[f"O-{ref}"].ethnicity) == (None, None)  # upstream gave none


# --- the monitoring key ---------------------------------------------------------------------------


class KeysInMemory(KeyStore):
    """The key store's contract for one batch, without PostgreSQL: a key per (person, case), made when first
    asked for, and destroyed by ``shred`` (the real store, on PostgreSQL, is tested end to end)."""

    def __init__(self) -> None:
        super().__init__(MasterKeys.parse(MasterKeys.generate("v1")))
        self.keys: dict[PersonCase, DataKey] = {}

    def shred(self, person_id: str, case_id: str) -> None:
        key = self.keys[(person_id, case_id)]
        self.keys[(person_id, case_id)] = DataKey(key.key_id, person_id, case_id, None)

    async def _load(self, conn: Any, pairs: set[PersonCase], ids: set[str]) -> Any:
        for pair in pairs - self.keys.keys():
            self.keys[pair] = DataKey(f"{len(self.keys):08d}-0000-4000-8000-000000000000", *pair, AESGCM(b"k" * 32))
        by_id = {k.key_id: k for k in self.keys.values()}
        return {p: self.keys[p] for p in pairs}, {i: by_id[i] for i in ids if i in by_id}


def a_victim(person_id: str) -> Participant:
    return Participant(
        person_id=person_id,
        role="victim",
        required=True,
        name="Philippa Q",
        date_of_birth=date(1979, 3, 14),
        age_band=AgeBand.from_45_to_54,
        gender="female",
        ethnicity="W1",
    )


async def test_rule_7_monitoring_fields_are_sealed_under_the_cases_monitoring_key_and_outlive_the_persons_erasure() -> (
    None
):
    store = KeysInMemory()
    cipher = cipher_for(Participant)
    pending = cipher.prepare_encrypt(a_victim("V-1").model_dump(mode="json"), CASE)
    owners = {slot.field: slot.owner for slot in pending.slots}
    assert owners == {
        "name": "V-1",
        "date_of_birth": "V-1",
        "age_band": MONITORING_PERSON,
        "gender": MONITORING_PERSON,
        "ethnicity": MONITORING_PERSON,
    }
    keys = KeyCache(store)
    await keys.load(None, pairs=pending.owners)
    sealed = pending.seal(keys)
    assert all(sealed[f].startswith("enc:v1:") for f in ("name", "age_band", "gender", "ethnicity"))
    in_clear = {k: v for k, v in sealed.items() if not (isinstance(v, str) and v.startswith("enc:v1:"))}
    assert "female" not in str(in_clear) and "W1" not in str(in_clear)  # ciphertext may hold "W1" by chance

    store.shred("V-1", CASE)  # the person declined: their key on the case goes, the case's keys stay
    opened = cipher.prepare_decrypt(sealed)
    fresh = KeyCache(store)
    await fresh.load(None, key_ids=opened.key_ids)
    after = Participant.model_validate(opened.open(fresh).data)
    assert (after.name, after.date_of_birth, after.contact) == (None, None, None)
    assert (after.person_id, after.role.value) == ("V-1", "victim")
    assert (after.age_band, after.gender, after.ethnicity) == (AgeBand.from_45_to_54, "female", "W1")

    store.shred(MONITORING_PERSON, CASE)  # the case's retention: the monitoring data goes too
    again = cipher.prepare_decrypt(sealed)
    last = KeyCache(store)
    await last.load(None, key_ids=again.key_ids)
    gone = Participant.model_validate(again.open(last).data)
    assert (gone.age_band, gone.gender, gone.ethnicity) == (None, None, None)


def test_rule_7_monitoring_fields_are_not_rectified_under_the_persons_key() -> None:
    assert not {"age_band", "gender", "ethnicity"} & RECTIFIABLE
    assert "name" in RECTIFIABLE


# --- the decision on a decline --------------------------------------------------------------------


def declined(purpose: str = PARTICIPATION, person_id: str = "V-1") -> ConsentDeclined:
    return ConsentDeclined(
        case_id=CASE,
        person_id=person_id,
        purpose=purpose,
        through=RecordedThrough.facilitator,
        method=RecordingMethod.phone,
        declined_at=NOW,
        declined_by=STAFF,
        recorded_at=NOW,
        reason="Does not want to meet",
    )


def erased(decline_id: str, keys: int) -> Any:
    return declined_participant_erased(
        case_id=CASE,
        person_id="V-1",
        role="victim",
        decline_id=decline_id,
        declined_at=NOW,
        declined_by=STAFF,
        keys=keys,
        now=NOW,
    )


def test_rule_7_the_fact_says_who_when_why_and_what_is_kept_and_a_replay_is_the_same_fact() -> None:
    emit = erased("decline-1", 1)
    fact = emit.data
    assert isinstance(fact, DeclinedParticipantErased)
    assert (fact.erased_person_id, fact.role, fact.decline_id) == ("V-1", "victim", "decline-1")
    assert fact.declined_by == STAFF
    assert (fact.declined_at, fact.erased_at, fact.keys_destroyed) == (NOW, NOW, 1)
    assert tuple(fact.kept) == KEPT_FOR_MONITORING
    again = erased("decline-2", 0)
    assert again.identity == emit.identity  # one fact per person and case, however often they decline
