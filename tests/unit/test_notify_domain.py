"""The notify service's decisions: who is told what, when, on which channel (``services.notify.domain``)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from schemas.commands import CommandRejected
from schemas.common import Channel, Contact
from schemas.envelope import EventData
from schemas.notify import (
    CancelReason,
    MessageFormat,
    MessageLanguage,
    NotificationKind,
    RecipientKind,
    SetNotifyPreferences,
)
from services.notify import domain
from services.notify.domain import Cancel, Decision, Intent, NotifyCase, Person, choose_channel, notification_id
from tests.unit import notify_events as ev

Kind = NotificationKind


class Story:
    """Feeds events to the domain one by one, keeping the state and everything decided."""

    def __init__(self, now: datetime = ev.T0) -> None:
        self.case: NotifyCase | None = None
        self.now = now
        self.decisions: list[Decision] = []
        self.n = 0

    def take(self, event: EventData, event_id: str | None = None) -> Decision:
        self.n += 1
        decision = domain.decide(self.case, event, case_id=ev.CASE, event_id=event_id or f"e{self.n}", now=self.now)
        self.case = decision.case
        self.decisions.append(decision)
        return decision

    def started(self, *, sensitive: bool = False) -> Story:
        for event in (ev.opened(), ev.accepted(sensitive=sensitive), ev.assigned()):
            self.take(event)
        return self


def kinds_to(decision: Decision) -> set[tuple[Kind, str]]:
    return {(i.kind, i.recipient_id) for i in decision.intents}


def test_the_victim_is_sent_rj_information_by_email_when_it_falls_due() -> None:
    story = Story().started()
    decision = story.take(ev.victim_information_due())
    [intent] = decision.intents
    assert (intent.kind, intent.recipient_id, intent.channel) == (Kind.victim_information, ev.VICTIM, Channel.email)
    assert intent.due_at == ev.T0 and not intent.urgent


def test_on_a_sensitive_case_the_victim_information_waits_for_a_risk_assessment_that_allows_contact() -> None:
    story = Story().started(sensitive=True)
    assert story.take(ev.victim_information_due(), "due-1").intents == []
    assert story.take(ev.risk_assessed(False)).intents == []
    [intent] = story.take(ev.risk_assessed(True, at=ev.T0 + timedelta(hours=1))).intents
    assert intent.kind is Kind.victim_information
    # Decided on the event that made it due: a replay of either decides the same message.
    assert intent.notification_id == domain.notification_id("due-1", Kind.victim_information, ev.VICTIM)


def test_a_facilitator_is_told_of_their_assignment() -> None:
    story = Story()
    story.take(ev.opened())
    [intent] = story.take(ev.assigned("F-BOB")).intents
    assert (intent.kind, intent.recipient_id, intent.recipient_kind) == (
        Kind.facilitator_assigned,
        "F-BOB",
        RecipientKind.staff,
    )


def test_each_attendee_is_told_of_a_booked_meeting_and_reminded_48_hours_before() -> None:
    story = Story().started()
    decision = story.take(ev.booked(starts_at=datetime(2026, 3, 13, 11, tzinfo=UTC)))
    assert kinds_to(decision) == {
        (Kind.meeting_booked, ev.VICTIM),
        (Kind.meeting_booked, ev.OFFENDER),
        (Kind.meeting_reminder, ev.VICTIM),
        (Kind.meeting_reminder, ev.OFFENDER),
    }
    reminder = next(i for i in decision.intents if i.kind is Kind.meeting_reminder)
    assert reminder.due_at == datetime(2026, 3, 11, 11, tzinfo=UTC) and reminder.about == "meeting:M1"
    assert reminder.facts["venue_id"] == "V-HUB"


def test_a_cancelled_meeting_cancels_its_reminders_and_tells_its_attendees() -> None:
    story = Story().started()
    story.take(ev.booked())
    decision = story.take(ev.meeting_cancelled())
    assert decision.cancels == [Cancel(CancelReason.meeting_cancelled, about="meeting:M1")]
    assert kinds_to(decision) == {(Kind.meeting_cancelled, ev.VICTIM), (Kind.meeting_cancelled, ev.OFFENDER)}


def test_a_withdrawal_command_cancels_everything_waiting_but_the_closure_notice_at_once() -> None:
    story = Story().started()
    story.take(ev.booked())
    decision = story.take(ev.withdraw(), "cmd-1")
    assert decision.intents == []
    kept = frozenset({Kind.closure, Kind.process_stopped, Kind.withdrawal_confirmed})  # the stop's own notices too
    assert decision.cancels == [Cancel(CancelReason.withdrawn, keep=kept, participants_only=True)]
    assert story.case is not None and story.case.stopped
    # Whatever comes from other topics meanwhile sends nothing to participants.
    assert story.take(ev.booked("M2")).intents == []
    assert story.take(ev.due_soon()).intents == []


def test_after_a_withdrawal_the_others_are_told_only_that_the_process_stopped() -> None:
    story = Story().started()
    story.take(ev.withdraw(), "cmd-1")
    facts = story.take(ev.consent_withdrawn("cmd-1"))
    assert kinds_to(facts) == {(Kind.facilitator_withdrawal, "F-ANN"), (Kind.withdrawal_confirmed, ev.OFFENDER)}
    urgent = next(i for i in facts.intents if i.kind is Kind.facilitator_withdrawal)
    assert urgent.urgent and urgent.due_at == ev.T0
    stopped = story.take(ev.case_withdrawn())
    assert kinds_to(stopped) == {(Kind.process_stopped, ev.VICTIM)}
    assert stopped.intents[0].facts == {}  # nothing about who or why
    # Then only the closure notice, to everyone; no survey on a withdrawn case.
    assert kinds_to(story.take(ev.closed())) == {(Kind.closure, ev.VICTIM), (Kind.closure, ev.OFFENDER)}
    assert story.take(ev.survey(ev.VICTIM)).intents == []


def test_consents_withdrawal_fact_overtaking_the_command_cancels_what_waits_for_everyone_at_once() -> None:
    """Consent's fact and the command come on different topics: when the fact is read first, a required
    participant's withdrawal stops the case there and then; the victim's meeting reminder does not wait for
    rj.case.withdrawn (found by the stop property, with the fact read before its command)."""
    story = Story().started()
    story.take(ev.booked())
    decision = story.take(ev.consent_withdrawn("cmd-1"))
    assert Cancel(CancelReason.withdrawn, keep=domain.KEPT_ON_A_STOP, participants_only=True) in decision.cancels
    assert story.take(ev.booked("M2")).intents == []
    assert story.take(ev.withdraw(), "cmd-1").intents == []


def test_a_withdrawal_refused_by_consent_lifts_the_stop_and_tells_the_facilitator() -> None:
    story = Story().started()
    story.take(ev.withdraw(), "cmd-1")
    decision = story.take(ev.rejected("cmd-1", "rj.consent.withdraw"))
    assert kinds_to(decision) == {(Kind.facilitator_withdrawal, "F-ANN")}
    assert [i.facts for i in decision.intents] == [{"lifted": True}]
    assert story.case is not None and not story.case.stopped
    assert len(story.take(ev.booked()).intents) == 4


def test_a_strangers_withdrawal_on_an_accepted_case_stops_only_their_own_messages() -> None:
    """A mistaken or hostile command naming someone not on the case must not take back the case's messages."""
    story = Story().started()
    decision = story.take(ev.withdraw("P-NOBODY"), "cmd-1")
    assert [c.recipient_id for c in decision.cancels] == ["P-NOBODY"]
    assert story.case is not None and not story.case.stopped
    assert kinds_to(story.take(ev.victim_information_due())) == {(Kind.victim_information, ev.VICTIM)}


def test_a_strangers_withdrawal_read_before_the_case_holds_back_nothing_once_the_case_is_accepted() -> None:
    """The command can overtake the referral's facts (another topic): while no one on the case is known it stops
    the case, and once the case says who takes part it holds back only the stranger's messages, so the victim's
    information goes, and consent's refusal of it lifts nothing more."""
    story = Story()
    story.take(ev.withdraw("P-NOBODY"), "cmd-1")
    assert story.case is not None and story.case.stopped
    story.take(ev.opened())
    story.take(ev.accepted())
    assert story.case is not None and not story.case.stopped
    assert kinds_to(story.take(ev.victim_information_due())) == {(Kind.victim_information, ev.VICTIM)}
    story.take(ev.rejected("cmd-1", "rj.consent.withdraw"))
    assert story.case is not None and not story.case.persons_pending


def test_a_withdrawal_by_an_offender_who_joins_later_stops_the_case_when_they_join() -> None:
    """Read before the case, by someone not on it at acceptance: it held back only their messages; when they
    join as a required participant (a second offender) it stops the case, as if read now."""
    from schemas.common import Actor
    from schemas.consent import CaseParticipant
    from schemas.referral import OffenderJoined, Participant, Role

    story = Story()
    story.take(ev.withdraw("offender-2"), "cmd-1")
    story.take(ev.opened())
    story.take(ev.accepted())
    story.take(ev.assigned())
    assert story.case is not None and not story.case.stopped
    joined = OffenderJoined(
        case_id=ev.CASE, crime_reference="WM/2026/1",
        participant=CaseParticipant(person_id="offender-2", role=Role.offender, required=True),
        details=Participant(person_id="offender-2", role=Role.offender, required=True, name="Someone"),
        joined_at=ev.T0, decided_by=Actor(kind="system", id="referral-service"),
    )  # fmt: skip
    decision = story.take(joined)
    assert story.case is not None and story.case.stopped
    assert any(c.participants_only and c.recipient_id is None for c in decision.cancels)
    assert {i.recipient_kind for i in story.take(ev.booked()).intents} <= {RecipientKind.staff}
    story.take(ev.rejected("cmd-1", "rj.consent.withdraw"))  # consent refused it: the stop is lifted
    assert story.case is not None and not story.case.stopped


def test_an_offenders_withdrawal_read_before_the_case_still_stops_it_once_the_case_is_accepted() -> None:
    story = Story()
    story.take(ev.withdraw(), "cmd-1")
    story.take(ev.opened())
    story.take(ev.accepted())
    assert story.case is not None and story.case.stopped
    assert story.take(ev.victim_information_due()).intents == []


def test_a_verdict_that_overtakes_its_command_leaves_nothing_pending_when_the_command_is_read() -> None:
    story = Story().started()
    story.take(ev.rejected("cmd-1", "rj.consent.withdraw"))
    decision = story.take(ev.withdraw(), "cmd-1")
    assert decision.cancels == [] and story.case is not None and not story.case.stopped


def test_a_hold_stops_the_case_tells_the_facilitator_at_once_and_a_resume_lets_new_messages_go() -> None:
    story = Story().started()
    assert story.take(ev.hold(), "hold-1").cancels[0].reason is CancelReason.held
    decision = story.take(ev.held("hold-1"))
    assert kinds_to(decision) == {(Kind.facilitator_hold, "F-ANN")}
    assert story.take(ev.booked()).intents == []
    story.take(ev.resumed())
    assert len(story.take(ev.booked("M2")).intents) == 4


def test_an_unmet_item_goes_to_the_harmed_person_naming_no_owner() -> None:
    story = Story().started()
    [intent] = story.take(ev.overdue()).intents
    assert (intent.kind, intent.recipient_id) == (Kind.item_unmet, ev.VICTIM)
    assert set(intent.facts) == {"item_kind", "due_date"}


def test_an_item_reminder_goes_to_its_owner() -> None:
    story = Story().started()
    [intent] = story.take(ev.due_soon()).intents
    assert (intent.kind, intent.recipient_id, intent.channel) == (Kind.item_reminder, ev.OFFENDER, Channel.sms)


def test_a_message_due_at_22_on_a_friday_waits_for_9_on_saturday() -> None:
    story = Story(now=datetime(2026, 3, 6, 22, 0, tzinfo=UTC)).started()
    [intent] = story.take(ev.victim_information_due()).intents
    assert intent.due_at == datetime(2026, 3, 7, 9, 0, tzinfo=UTC)


def test_a_persons_own_quiet_hours_decide_when_their_messages_go() -> None:
    story = Story().started()
    story.take(
        SetNotifyPreferences(
            case_id=ev.CASE, actor=ev.STAFF, person_id=ev.VICTIM, language=MessageLanguage.cy,
            format=MessageFormat.easy_read, quiet_hours="mon-fri 12:00-14:00",
        ),
        "prefs-1",
    )  # fmt: skip
    [intent] = story.take(ev.victim_information_due()).intents
    assert intent.due_at == datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


def test_preferences_for_someone_not_on_the_case_are_refused() -> None:
    story = Story().started()
    decision = story.take(SetNotifyPreferences(case_id=ev.CASE, actor=ev.STAFF, person_id="stranger"), "p-1")
    [emit] = decision.emits
    assert isinstance(emit.data, CommandRejected) and "not a participant" in emit.data.reason


def test_the_preferred_channel_is_used_only_if_the_safe_contact_record_allows_it() -> None:
    person = Person(person_id="p", role="victim", preferred_channel=Channel.sms,
                    contact=Contact(email="a@b.c", phone="0770", address="home"))  # fmt: skip
    assert choose_channel(person) is Channel.sms
    story = Story().started()
    story.take(ev.safe_contact(ev.OFFENDER, [Channel.email, Channel.letter]))
    assert story.case is not None
    offender = story.case.person(ev.OFFENDER)
    assert choose_channel(offender) is Channel.email  # sms preferred, but not safe
    assert choose_channel(offender, excluding=[Channel.email]) is None  # letters home not ok, no alternative


def test_a_letter_goes_to_a_safe_alternative_address_never_home_when_home_is_unsafe() -> None:
    safe = domain.SafeChannels((Channel.letter,), letters_to_home_ok=False, alternative_address="PO Box 1")
    person = Person(person_id="p", role="victim", contact=Contact(address="home"), safe=safe)
    assert choose_channel(person) is Channel.letter and domain.address_for(person, Channel.letter) == "PO Box 1"
    assert domain.address_for(replace(person, safe=replace(safe, alternative_address=None)), Channel.letter) is None


def test_a_person_with_no_safe_channel_gets_an_intent_with_no_channel() -> None:
    story = Story()
    story.take(ev.opened(victim_contact=Contact()))
    story.take(ev.accepted())
    story.take(ev.assigned())
    [intent] = story.take(ev.victim_information_due()).intents
    assert intent.channel is None


def test_erasing_a_person_cancels_what_waits_for_them_and_forgets_how_to_reach_them() -> None:
    from schemas.privacy import DeclinedParticipantErased

    story = Story().started()
    decision = story.take(
        DeclinedParticipantErased(
            case_id=ev.CASE, erased_person_id=ev.VICTIM, role="victim", decline_id="d", declined_at=ev.T0,
            declined_by=ev.STAFF, kept=[], kept_under_hold=False, keys_destroyed=1, erased_at=ev.T0,
        )
    )  # fmt: skip
    assert decision.cancels == [Cancel(CancelReason.erased, recipient_id=ev.VICTIM)]
    assert story.case is not None
    victim = story.case.person(ev.VICTIM)
    assert victim is not None and victim.contact is None and victim.name is None
    assert story.take(ev.closed()).intents[0].recipient_id == ev.OFFENDER


def test_notification_ids_are_derived_so_a_replay_decides_the_same_messages() -> None:
    first, second = Story().started(), Story().started()
    a = first.take(ev.booked(), "booked-1")
    b = second.take(ev.booked(), "booked-1")
    assert [i.notification_id for i in a.intents] == [i.notification_id for i in b.intents]
    assert len({i.notification_id for i in a.intents}) == 4


def test_links_are_off_on_a_sensitive_case_unless_staff_turned_them_on() -> None:
    from schemas.links import ParticipantLinksChanged

    story = Story().started(sensitive=True)
    assert story.case is not None and not story.case.links_allowed
    story.take(ParticipantLinksChanged(case_id=ev.CASE, enabled=True, changed_by=ev.STAFF, changed_at=ev.T0))
    assert story.case.links_allowed
    assert Story().started().case.links_allowed  # type: ignore[union-attr]


def test_every_intent_kind_is_a_notification_kind_and_staff_kinds_go_to_staff() -> None:
    story = Story().started()
    story.take(ev.withdraw(), "c")
    decision = story.take(ev.consent_withdrawn("c"))
    for intent in decision.intents:
        assert isinstance(intent, Intent)
        assert (intent.kind in domain.STAFF_KINDS) == (intent.recipient_kind is RecipientKind.staff)


def test_victim_information_due_before_the_case_is_accepted_waits_for_it_and_goes_on_acceptance() -> None:
    story = Story()
    assert story.take(ev.victim_information_due(), "vi-due").intents == []  # the crime's clock, no case yet
    story.take(ev.opened())
    [intent] = story.take(ev.accepted()).intents
    assert (intent.kind, intent.recipient_id, intent.channel) == (Kind.victim_information, ev.VICTIM, Channel.email)
    assert intent.notification_id == notification_id("vi-due", Kind.victim_information, ev.VICTIM)


def test_victim_information_due_before_a_sensitive_case_is_accepted_waits_for_the_risk_assessment() -> None:
    story = Story()
    story.take(ev.victim_information_due())
    story.take(ev.opened())
    assert story.take(ev.accepted(sensitive=True)).intents == []
    assert [i.kind for i in story.take(ev.risk_assessed(True)).intents] == [Kind.victim_information]
