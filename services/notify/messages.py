"""What a message says, and to whom it may say it (issue 19, DOMAIN rules 2, 3 and 9).

Each ``MessageKind`` has one frozen context model holding only what its audience may see: a participant's
message knows the recipient's own name, times, a venue and codes (an item's kind, a role), never another party's
name, contact details or words; a facilitator's knows the case, roles and times, never anyone's contact details
(staff read people's data in the API, where every view is logged, rule 8). ``context_for`` builds a context from
the recipient alone, so another party's data has no way in; ``render`` turns it into the four forms a channel
needs (``Rendered``).

The words are Jinja2 files in ``templates/``, one per kind, format and language (``<kind>.<format>.<lang>.j2``),
each defining the subject, the body and the SMS. Text and HTML are rendered from the same file (the HTML with
autoescape on), so the two parts of an email cannot say different things; large print is the standard words in
a large-print layout, by construction. The greeting, the sign-off and how to stop come from the language's layout
(``_layout.<lang>.j2``), so no message can forget them: every participant message ends with how to stop (the
withdraw link when there is one, else the service's phone), and a facilitator's says it was sent automatically.
``StrictUndefined`` makes a template that names a missing field fail loudly instead of printing nothing.

Times are shown in Europe/London, in words as GOV.UK writes them ("Saturday 5 December 2026 at 10:30am"); the
Welsh day and month names live here beside the English ones, since they are calendar data, not prose.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime
from enum import StrEnum
from functools import cache, partial
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template
from markupsafe import Markup
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from schemas.common import Channel
from schemas.indirect import IndirectItemKind
from schemas.referral import Role
from schemas.scheduling import ItemKind, MeetingKind
from services.runtime.calendar import LONDON

TEMPLATES = Path(__file__).parent / "templates"

FACILITATOR_ROLE = "facilitator"
"""``PartyView.role`` of a facilitator: the recipient of the facilitator kinds, and only of them."""

SMS_MAX_CHARS = 612
SMS_MAX_FRAGMENTS = 4


class MessageKind(StrEnum):
    victim_information = "victim_information"  # to the victim: what RJ is, how to take part (Victims' Code)
    facilitator_assigned = "facilitator_assigned"  # to a facilitator: a new case is theirs
    facilitator_withdrawal = "facilitator_withdrawal"  # to the case's facilitator, urgent: someone withdrew/declined
    facilitator_hold = "facilitator_hold"  # to the case's facilitator, urgent: the case is on hold
    facilitator_delivery_problem = "facilitator_delivery_problem"  # a message failed or may not have arrived
    meeting_booked = "meeting_booked"  # to each attendee: time, place, arrival arrangements
    meeting_rescheduled = "meeting_rescheduled"
    meeting_cancelled = "meeting_cancelled"
    meeting_reminder = "meeting_reminder"  # before a meeting
    item_reminder = "item_reminder"  # to an agreement item's owner before it is due
    item_unmet = "item_unmet"  # to the harmed person: an item was not met (no offender details)
    indirect_item = "indirect_item"  # to the recipient: an approved letter/message is ready for them
    process_stopped = "process_stopped"  # to everyone else after a withdrawal: names no one, no why
    withdrawal_confirmed = "withdrawal_confirmed"  # to the person who withdrew: we have stopped
    closure = "closure"  # the closure notice (goes even after a withdrawal)
    survey_invitation = "survey_invitation"


class Language(StrEnum):
    en = "en"
    cy = "cy"


class Format(StrEnum):
    standard = "standard"
    easy_read = "easy_read"
    large_print = "large_print"  # the standard words, at >= 16pt in HTML and the letter


class DeliveryProblem(StrEnum):
    """What ``facilitator_delivery_problem`` reports."""

    failed = "failed"  # the channel refused it for good; ``next_channel`` says what is tried next, if anything
    uncertain = "uncertain"  # it may or may not have gone: never sent again blindly, so never twice
    no_safe_channel = "no_safe_channel"  # the person's safe-contact record allows no channel we can send on


# --- what a message may hold ------------------------------------------------------------------------------

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Line = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
Link = Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=600)]
"""A link we made (a withdraw link, a survey): http(s) and no spaces, so it never breaks across lines."""


class _Context(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    service_name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60)]
    service_phone: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]


class ToParticipant(_Context):
    """What every participant message may hold: the recipient's own name and the hub's own contact."""

    recipient_name: Name | None = None


class ToParticipantTakingPart(ToParticipant):
    """A message while the process runs: it carries the person's withdraw link (none on a sensitive case unless
    staff turned links on), and ends with it."""

    withdraw_link: Link | None = None


class ToFacilitator(_Context):
    """A facilitator's message: the case, and the facilitator's own name. Roles and times at most, never anyone's
    name or contact details."""

    case_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    crime_reference: Annotated[str, StringConstraints(min_length=1, max_length=100)]  # the SMS names the case by it
    facilitator_name: Name | None = None


class VictimInformationContext(ToParticipantTakingPart):
    facilitator_name: Name | None = None


class FacilitatorAssignedContext(ToFacilitator):
    sensitive: bool = False  # a specialist case: no contact before the risk assessment allows it
    victim_information_due: date | None = None  # the Victims' Code date for telling the victim about RJ


class FacilitatorWithdrawalContext(ToFacilitator):
    participant_role: Role | None = None
    declined: bool = False  # declined rather than withdrew
    stopped_at: AwareDatetime | None = None
    lifted: bool = False  # consent refused the withdrawal: the case goes on, cancelled messages stay cancelled


class FacilitatorHoldContext(ToFacilitator):
    held_at: AwareDatetime | None = None
    lifted: bool = False  # consent refused the hold: the case goes on, cancelled messages stay cancelled


class DeliveryProblemContext(ToFacilitator):
    problem: DeliveryProblem
    message_kind: MessageKind
    recipient_role: Role | None = None  # None: a member of staff
    channel: Channel | None = None
    next_channel: Channel | None = None  # what is tried next after a failure; None: nothing is


class MeetingContext(ToParticipantTakingPart):
    """Time, place and how to arrive: never who else comes."""

    starts_at: AwareDatetime
    ends_at: AwareDatetime
    meeting_kind: MeetingKind = MeetingKind.conference
    venue_name: Line | None = None
    venue_address: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)] | None = None
    arrival: Text | None = None  # arrival and waiting arrangements, e.g. a separate entrance
    facilitator_name: Name | None = None

    @model_validator(mode="after")
    def _ends_after_start(self) -> Self:
        if self.ends_at <= self.starts_at:
            raise ValueError("a meeting must end after it starts")
        return self


class MeetingRescheduledContext(MeetingContext):
    previous_starts_at: AwareDatetime | None = None


class MeetingCancelledContext(ToParticipantTakingPart):
    """No reason: a reason could say who (rule 2)."""

    starts_at: AwareDatetime
    meeting_kind: MeetingKind = MeetingKind.conference
    facilitator_name: Name | None = None


class ItemReminderContext(ToParticipantTakingPart):
    """To the item's owner, about their own item: its kind and date, not its words (they may name the other)."""

    item_kind: ItemKind
    due_date: date
    amount_outstanding_pence: Annotated[int, Field(gt=0)] | None = None


class ItemUnmetContext(ToParticipantTakingPart):
    """To the harmed person: which kind of item and when it was due, never who owed it."""

    item_kind: ItemKind
    due_date: date


class IndirectItemContext(ToParticipantTakingPart):
    """An approved item is ready: its kind only, never its content (the facilitator shares it, rule 9)."""

    item_kind: IndirectItemKind
    facilitator_name: Name | None = None


class ProcessStoppedContext(ToParticipant):
    """Names no one and gives no why (rule 2)."""


class WithdrawalConfirmedContext(ToParticipant):
    pass


class ClosureContext(ToParticipant):
    completed: bool = False  # only a completed case says so; any other reason could say who (rule 2)


class SurveyInvitationContext(ToParticipant):
    survey_link: Link | None = None


_CONTEXTS: dict[MessageKind, type[_Context]] = {
    MessageKind.victim_information: VictimInformationContext,
    MessageKind.facilitator_assigned: FacilitatorAssignedContext,
    MessageKind.facilitator_withdrawal: FacilitatorWithdrawalContext,
    MessageKind.facilitator_hold: FacilitatorHoldContext,
    MessageKind.facilitator_delivery_problem: DeliveryProblemContext,
    MessageKind.meeting_booked: MeetingContext,
    MessageKind.meeting_rescheduled: MeetingRescheduledContext,
    MessageKind.meeting_cancelled: MeetingCancelledContext,
    MessageKind.meeting_reminder: MeetingContext,
    MessageKind.item_reminder: ItemReminderContext,
    MessageKind.item_unmet: ItemUnmetContext,
    MessageKind.indirect_item: IndirectItemContext,
    MessageKind.process_stopped: ProcessStoppedContext,
    MessageKind.withdrawal_confirmed: WithdrawalConfirmedContext,
    MessageKind.closure: ClosureContext,
    MessageKind.survey_invitation: SurveyInvitationContext,
}

FACILITATOR_KINDS: frozenset[MessageKind] = frozenset(k for k, m in _CONTEXTS.items() if issubclass(m, ToFacilitator))
WITHDRAW_LINK_KINDS: frozenset[MessageKind] = frozenset(
    k for k, m in _CONTEXTS.items() if issubclass(m, ToParticipantTakingPart)
)
"""The kinds that carry a withdraw link: the ones sent while the process runs. After it has stopped (the other
party's notice, the confirmation, the closure, the survey) a link to withdraw would do nothing."""


def context_model(kind: MessageKind) -> type[BaseModel]:
    """The one context model of ``kind``."""
    return _CONTEXTS[kind]


# --- building a context from what notify knows --------------------------------------------------------------


class PartyView(BaseModel, frozen=True):
    """What notify knows of one person, opened."""

    person_id: str
    role: str
    name: str | None
    email: str | None
    phone: str | None
    address: str | None
    language: Language = Language.en
    format: Format = Format.standard


class CaseView(BaseModel, frozen=True):
    """What notify knows of the case: no personal data of its participants."""

    case_id: str
    crime_reference: str
    facilitator_name: str | None


def context_for(kind: MessageKind, *, recipient: PartyView, case: CaseView, **facts: Any) -> BaseModel:
    """The context of a ``kind`` message to ``recipient``. It takes one person's view, never a list of parties, so
    no other party's data can reach the message: names come from ``recipient`` and ``case`` only, and ``facts``
    may not supply them. Raises ``ValueError`` for a facilitator kind to a participant or the other way round, and
    pydantic's ``ValidationError`` for a fact the kind does not hold."""
    model = _CONTEXTS[kind]
    fields: dict[str, Any]
    if kind in FACILITATOR_KINDS:
        if recipient.role != FACILITATOR_ROLE:
            raise ValueError(f"a {kind} message goes to a facilitator, not a {recipient.role}")
        fields = {"case_id": case.case_id, "crime_reference": case.crime_reference, "facilitator_name": recipient.name}
        from_facts = set(fields)
    else:
        if recipient.role == FACILITATOR_ROLE:
            raise ValueError(f"a {kind} message goes to a participant, not a facilitator")
        fields = {"recipient_name": recipient.name}
        from_facts = {"recipient_name"}
        if "facilitator_name" in model.model_fields:
            fields["facilitator_name"] = case.facilitator_name  # a meeting's own facilitator may replace it
    clash = from_facts & facts.keys()
    if clash:
        raise ValueError(f"{', '.join(sorted(clash))} come from the recipient and the case, not from facts")
    return model.model_validate({**fields, **facts})


# --- the result -------------------------------------------------------------------------------------------


class Rendered(BaseModel, frozen=True):
    subject: str  # one line, no line breaks
    text: str  # plain text body (email text part, SMS, letter body)
    html: str  # HTML body (email HTML part; the letter PDF is rendered from it)
    sms: str  # a short form for SMS (<= 612 chars, 4 fragments), no link shorteners

    @model_validator(mode="after")
    def _fits(self) -> Self:
        if not self.subject or "\n" in self.subject or "\r" in self.subject:
            raise ValueError("a subject is one line")
        if len(self.sms) > SMS_MAX_CHARS or sms_fragments(self.sms) > SMS_MAX_FRAGMENTS:
            raise ValueError(f"an SMS is at most {SMS_MAX_CHARS} characters in {SMS_MAX_FRAGMENTS} fragments")
        return self


_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = frozenset("^{}\\[~]|€\f")


def sms_fragments(text: str) -> int:
    """How many SMS fragments ``text`` is sent as: GSM 03.38 (160 septets, 153 a part when split; an extension
    character takes two) when every character is in it, else UCS-2 (70 units, 67 a part). Welsh's circumflexes
    (â, ŵ, ŷ, ...) are not GSM, so a Welsh SMS has less room: ``render`` drops the link for the phone when it must."""
    if all(c in _GSM_BASIC or c in _GSM_EXTENDED for c in text):
        units, single, part = sum(2 if c in _GSM_EXTENDED else 1 for c in text), 160, 153
    else:
        units, single, part = len(text.encode("utf-16-le")) // 2, 70, 67
    return 1 if units <= single else math.ceil(units / part)


# --- times and money in words -------------------------------------------------------------------------------

_DAYS = {
    Language.en: ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    # Welsh writes "dydd" in lower case within a sentence; a template starting a sentence with a day uses upper_first.
    Language.cy: ("dydd Llun", "dydd Mawrth", "dydd Mercher", "dydd Iau", "dydd Gwener", "dydd Sadwrn", "dydd Sul"),
}
_MONTHS = {
    Language.en: (
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ),
    Language.cy: (
        "Ionawr",
        "Chwefror",
        "Mawrth",
        "Ebrill",
        "Mai",
        "Mehefin",
        "Gorffennaf",
        "Awst",
        "Medi",
        "Hydref",
        "Tachwedd",
        "Rhagfyr",
    ),
}
_MIDDAY = {Language.en: "midday", Language.cy: "canol dydd"}
_MIDNIGHT = {Language.en: "midnight", Language.cy: "hanner nos"}
_AM_PM = {Language.en: ("am", "pm"), Language.cy: ("yb", "yh")}
_AT = {Language.en: "at", Language.cy: "am"}


def _london(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("a time in a message must be timezone-aware")
    return moment.astimezone(LONDON)


def day_in_words(value: date | datetime, language: Language) -> str:
    """``Saturday 5 December 2026`` (a datetime: its day in Europe/London)."""
    day = _london(value).date() if isinstance(value, datetime) else value
    return f"{_DAYS[language][day.weekday()]} {day.day} {_MONTHS[language][day.month - 1]} {day.year}"


def clock_in_words(moment: datetime, language: Language) -> str:
    """``10:30am``, ``10am``, ``midday``, ``midnight`` in Europe/London, as GOV.UK writes times."""
    local = _london(moment)
    if local.minute == 0 and local.hour in (0, 12):
        return (_MIDNIGHT if local.hour == 0 else _MIDDAY)[language]
    hour = local.hour % 12 or 12
    suffix = _AM_PM[language][local.hour >= 12]
    return f"{hour}{suffix}" if local.minute == 0 else f"{hour}:{local.minute:02d}{suffix}"


def when_in_words(moment: datetime, language: Language) -> str:
    """``Saturday 5 December 2026 at 10:30am`` (Welsh: ``dydd Sadwrn 5 Rhagfyr 2026 am 10:30yb``)."""
    return f"{day_in_words(moment, language)} {_AT[language]} {clock_in_words(moment, language)}"


def money_in_words(pence: int) -> str:
    """``£12.50``, ``£1,200``."""
    pounds, rest = divmod(pence, 100)
    return f"£{pounds:,}" + (f".{rest:02d}" if rest else "")


def _squash(value: str) -> str:
    """All whitespace runs to one space: a paragraph is one line however the template wraps it. Keeps HTML that
    is already safe safe, so a paragraph's own tags are not escaped."""
    squashed = re.sub(r"\s+", " ", value).strip()
    return Markup(squashed) if isinstance(value, Markup) else squashed


def _upper_first(value: str) -> str:
    """The first letter in capitals, for a phrase that starts a sentence; keeps safe HTML safe, like ``_squash``."""
    upper = value[:1].upper() + value[1:]
    return Markup(upper) if isinstance(value, Markup) else upper


def _environment(*, html: bool, language: Language) -> Environment:
    """One environment for each output and language: ``html`` (autoescape on) and the language's time words are
    globals, so the shared modules (``_ui.j2``, ``_words.<lang>.j2``) are imported without context and built once
    per environment, not on every render. Templates never change at run time: no reload checks."""
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=html,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    environment.globals["html"] = html
    environment.filters.update(
        day=partial(day_in_words, language=language),
        clock=partial(clock_in_words, language=language),
        when=partial(when_in_words, language=language),
        money=money_in_words,
        squash=_squash,
        upper_first=_upper_first,
    )
    return environment


_ENVIRONMENTS = {
    (html, language): _environment(html=html, language=language) for html in (False, True) for language in Language
}


# --- rendering ----------------------------------------------------------------------------------------------


def _audience(kind: MessageKind) -> Literal["facilitator", "taking_part", "ended"]:
    if kind in FACILITATOR_KINDS:
        return "facilitator"
    return "taking_part" if kind in WITHDRAW_LINK_KINDS else "ended"


def template_name(kind: MessageKind, language: Language, format: Format) -> str:
    """The file holding the words of ``kind`` in ``language`` and ``format`` (large print: the standard words)."""
    words = Format.standard if format is Format.large_print else format
    return f"{kind}.{words}.{language}.j2"


@cache
def _templates(language: Language, name: str) -> tuple[Template, Template]:
    return _ENVIRONMENTS[False, language].get_template(name), _ENVIRONMENTS[True, language].get_template(name)


def _tidy_text(text: str) -> str:
    """One blank line between paragraphs and no indentation, whatever the templates' layout."""
    lines = [line.strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def render(kind: MessageKind, context: BaseModel, *, language: Language, format: Format) -> Rendered:
    """``kind``'s message to the person ``context`` was built for, in their language and format.

    ``context`` must be exactly ``context_model(kind)`` (``TypeError`` otherwise): a model of another kind could
    carry what this audience may not see. ``service_name`` should be the hub's name in ``language``.

    The SMS carries the withdraw link when it fits in four fragments, else the service's phone (a real link is
    about 340 characters: it fits in English, not beside a circumflex, which makes the SMS UCS-2); only if even
    that does not fit, a meeting's SMS leaves out the address and arrival arrangements (the email or letter has
    them) and the survey's its link. The fields' length limits make that always enough."""
    model = _CONTEXTS[kind]
    if type(context) is not model:
        raise TypeError(f"a {kind} message takes a {model.__name__}, not a {type(context).__name__}")
    language, format = Language(language), Format(format)
    text_template, html_template = _templates(language, template_name(kind, language, format))
    # Only the fields the context holds: a field never set (model_construct) is undefined, and StrictUndefined
    # makes a template that uses it fail rather than print nothing.
    values: dict[str, Any] = {
        **dict(context),
        "kind": kind,
        "language": language,
        "format": format,
        "audience": _audience(kind),
    }
    subject = _squash(text_template.render(values, part="subject"))
    text = _tidy_text(text_template.render(values, part="text"))
    html = html_template.render(values, part="html")
    return Rendered(subject=subject, text=text, html=html, sms=_sms(text_template, values))


def _sms(template: Template, values: dict[str, Any]) -> str:
    link = values.get("withdraw_link")
    attempts = [(link, False), (None, False), (None, True)] if link else [(None, False), (None, True)]
    for sms_link, sms_brief in attempts:
        sms = _squash(template.render(values, part="sms", sms_link=sms_link, sms_brief=sms_brief))
        if len(sms) <= SMS_MAX_CHARS and sms_fragments(sms) <= SMS_MAX_FRAGMENTS:
            return sms
    raise ValueError(f"the {values['kind']} SMS does not fit in {SMS_MAX_FRAGMENTS} fragments even in brief")
