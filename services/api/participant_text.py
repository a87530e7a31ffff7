"""Every word the participant's withdraw pages show, in English and Welsh side by side, so that a translator
reviews one file and a test can hold the two languages to the same set of pages.

Plain, short sentences, as GOV.UK writes for the public. Nothing here names the case, the crime or anyone: the
person holding the phone may not be the participant. Each page that refuses points to the facilitator, who can
help whatever went wrong.

For the same reason a withdrawal sent, a link used already and a link refused on a sensitive case show one and the
same page (``FINISHED``): the page must not tell whoever holds the phone that the participant asked to stop before,
or that their case is one where links are off. Only the HTTP status differs (200, 410, 403), for the logs. An
expired or altered link says so plainly: that tells nothing about the participant or the case.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Page:
    title: str
    heading: str
    paragraphs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Text:
    service: str  # the page's <title> suffix and the header
    leave: str  # the quick-exit button
    switch_language: str  # the link to the page in the other language, written in that language
    button: str  # the confirmation page's button
    pages: dict[str, Page]


FINISHED = ("done", "used", "not_allowed")
"""The pages that must read the same, word for word (see above)."""

_ENGLISH_FINISHED = Page(
    title="Thank you",
    heading="Thank you",
    paragraphs=(
        "If you have asked to stop taking part, your facilitator will be in touch.",
        "You can contact your facilitator at any time.",
    ),
)

_WELSH_FINISHED = Page(
    title="Diolch",
    heading="Diolch",
    paragraphs=(
        "Os ydych wedi gofyn i roi'r gorau i gymryd rhan, bydd eich hwylusydd yn cysylltu â chi.",
        "Gallwch gysylltu â'ch hwylusydd ar unrhyw adeg.",
    ),
)

ENGLISH = Text(
    service="Restorative justice",
    leave="Leave this page quickly",
    switch_language="Cymraeg",
    button="Yes, stop taking part",
    pages={
        "confirm": Page(
            title="Stop taking part",
            heading="Do you want to stop taking part?",
            paragraphs=(
                "You can stop taking part in restorative justice at any time.",
                "You do not have to give a reason.",
                "If you want to talk about it first, contact your facilitator.",
            ),
        ),
        "done": _ENGLISH_FINISHED,
        "used": _ENGLISH_FINISHED,
        "expired": Page(
            title="Link expired",
            heading="This link has expired",
            paragraphs=(
                "This link no longer works.",
                "If you want to stop taking part, contact your facilitator.",
            ),
        ),
        "altered": Page(
            title="Link not working",
            heading="This link does not work",
            paragraphs=(
                "Check that you copied the whole link.",
                "If you want to stop taking part, contact your facilitator.",
            ),
        ),
        "not_allowed": _ENGLISH_FINISHED,
        "unavailable": Page(
            title="Try again later",
            heading="Sorry, there is a problem",
            paragraphs=(
                "Nothing has changed. Try again later.",
                "If you want to stop taking part, you can also contact your facilitator.",
            ),
        ),
    },
)

WELSH = Text(
    service="Cyfiawnder adferol",
    leave="Gadael y dudalen hon yn gyflym",
    switch_language="English",
    button="Ydw, rhoi'r gorau i gymryd rhan",
    pages={
        "confirm": Page(
            title="Rhoi'r gorau i gymryd rhan",
            heading="Ydych chi am roi'r gorau i gymryd rhan?",
            paragraphs=(
                "Gallwch roi'r gorau i gymryd rhan mewn cyfiawnder adferol ar unrhyw adeg.",
                "Nid oes rhaid i chi roi rheswm.",
                "Os ydych am siarad am hyn yn gyntaf, cysylltwch â'ch hwylusydd.",
            ),
        ),
        "done": _WELSH_FINISHED,
        "used": _WELSH_FINISHED,
        "expired": Page(
            title="Dolen wedi dod i ben",
            heading="Mae'r ddolen hon wedi dod i ben",
            paragraphs=(
                "Nid yw'r ddolen hon yn gweithio mwyach.",
                "Os ydych am roi'r gorau i gymryd rhan, cysylltwch â'ch hwylusydd.",
            ),
        ),
        "altered": Page(
            title="Dolen ddim yn gweithio",
            heading="Nid yw'r ddolen hon yn gweithio",
            paragraphs=(
                "Gwiriwch eich bod wedi copïo'r ddolen gyfan.",
                "Os ydych am roi'r gorau i gymryd rhan, cysylltwch â'ch hwylusydd.",
            ),
        ),
        "not_allowed": _WELSH_FINISHED,
        "unavailable": Page(
            title="Rhowch gynnig arall arni nes ymlaen",
            heading="Mae'n ddrwg gennym, mae problem",
            paragraphs=(
                "Nid oes dim wedi newid. Rhowch gynnig arall arni nes ymlaen.",
                "Os ydych am roi'r gorau i gymryd rhan, gallwch hefyd gysylltu â'ch hwylusydd.",
            ),
        ),
    },
)

TEXT: dict[str, Text] = {"en": ENGLISH, "cy": WELSH}
