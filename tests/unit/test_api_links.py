"""Participants' withdraw links without a database: a token opens only as it was made, with the key it was
made with, before it expires; the pages' words exist in English and Welsh alike."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr, ValidationError

from schemas.common import Actor
from schemas.links import ParticipantLinksChanged
from schemas.registry import REGISTRY
from services.api.links import (
    MAX_TOKEN_CHARS,
    LinkKeyMissing,
    LinkRefused,
    Refusal,
    mint_link,
    new_link_key,
    open_link,
)
from services.api.participant_text import FINISHED, TEXT
from services.runtime.settings import Settings

KEY = new_link_key()


def settings(key: str = KEY) -> Settings:
    return Settings(participant_link_key=SecretStr(key), public_base_url="https://rj.example.police.uk/")


def token_of(link: str) -> str:
    return link.rsplit("/p/", 1)[1]


def refusal(token: str, s: Settings | None = None) -> Refusal:
    with pytest.raises(LinkRefused) as refused:
        open_link(s or settings(), token)
    return refused.value.reason_code


def test_a_link_opens_to_the_person_and_case_it_was_made_for() -> None:
    link = mint_link(settings(), case_id="case-1", person_id="V-1")
    assert link.startswith("https://rj.example.police.uk/p/")
    claims = open_link(settings(), token_of(link))
    assert (claims.purpose, claims.case_id, claims.person_id) == ("withdraw", "case-1", "V-1")
    assert claims.expires_at > datetime.now(UTC) + timedelta(days=27)


def test_a_token_says_nothing_readable_about_the_case_or_the_person() -> None:
    token = token_of(mint_link(settings(), case_id="case-visible", person_id="V-visible"))
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert b"visible" not in raw and "visible" not in token


def test_two_links_for_the_same_person_are_different_links() -> None:
    a = open_link(settings(), token_of(mint_link(settings(), case_id="c", person_id="p")))
    b = open_link(settings(), token_of(mint_link(settings(), case_id="c", person_id="p")))
    assert a.link_id != b.link_id


def test_every_single_byte_change_to_a_token_is_refused_as_altered() -> None:
    token = token_of(mint_link(settings(), case_id="case-1", person_id="V-1"))
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for i in range(len(raw)):
        changed = bytearray(raw)
        changed[i] ^= 0x01
        altered = base64.urlsafe_b64encode(bytes(changed)).rstrip(b"=").decode()
        assert refusal(altered) == Refusal.altered, i


@pytest.mark.parametrize(
    "token",
    ["", "hello", "AAAA", "A" * (MAX_TOKEN_CHARS + 1), "not/a/token", "%00", "é", "A" * 80],
)
def test_garbage_is_refused_as_altered(token: str) -> None:
    assert refusal(token) == Refusal.altered


def test_a_truncated_token_is_refused_as_altered() -> None:
    token = token_of(mint_link(settings(), case_id="case-1", person_id="V-1"))
    assert refusal(token[:-3]) == Refusal.altered


def test_a_link_made_with_another_key_is_refused() -> None:
    token = token_of(mint_link(settings(new_link_key()), case_id="case-1", person_id="V-1"))
    assert refusal(token) == Refusal.altered


def test_while_rotating_the_key_old_links_still_open_and_new_ones_use_the_new_key() -> None:
    old_token = token_of(mint_link(settings(), case_id="case-1", person_id="V-1"))
    new_key = new_link_key()
    rotating = settings(f"{new_key},{KEY}")
    assert open_link(rotating, old_token).case_id == "case-1"
    new_token = token_of(mint_link(rotating, case_id="case-2", person_id="V-2"))
    assert open_link(settings(new_key), new_token).case_id == "case-2"
    assert refusal(new_token) == Refusal.altered  # the old key alone cannot open it


def test_an_expired_link_is_refused_as_expired_not_as_altered() -> None:
    made = datetime.now(UTC) - timedelta(days=40)
    token = token_of(mint_link(settings(), case_id="case-1", person_id="V-1", now=made))
    assert refusal(token) == Refusal.expired
    assert open_link(settings(), token, now=made + timedelta(days=1)).case_id == "case-1"


@pytest.mark.parametrize("key", ["", "not base64!", base64.b64encode(b"short").decode()])
def test_without_a_usable_key_no_link_is_made_or_opened(key: str) -> None:
    with pytest.raises(LinkKeyMissing):
        mint_link(settings(key), case_id="case-1", person_id="V-1")
    with pytest.raises(LinkKeyMissing):
        open_link(settings(key), "AAAA" * 30)


def test_the_welsh_pages_say_everything_the_english_ones_do() -> None:
    english, welsh = TEXT["en"], TEXT["cy"]
    assert english.pages.keys() == welsh.pages.keys()
    for name, page in english.pages.items():
        other = welsh.pages[name]
        assert len(other.paragraphs) == len(page.paragraphs), name
        for mine, theirs in zip(
            (page.title, page.heading, *page.paragraphs), (other.title, other.heading, *other.paragraphs), strict=True
        ):
            assert mine and theirs and mine != theirs, name
    assert english.leave == "Leave this page quickly" and welsh.leave == "Gadael y dudalen hon yn gyflym"


def test_a_withdrawal_a_used_link_and_a_refused_case_read_the_same_in_each_language() -> None:
    for text in TEXT.values():
        first, *others = (text.pages[name] for name in FINISHED)
        assert all(page == first for page in others)
        assert text.pages["expired"] != first and text.pages["altered"] != first


def test_the_links_changed_fact_is_registered_and_says_who_and_when() -> None:
    fact = ParticipantLinksChanged(
        case_id="case-1", enabled=True, changed_by=Actor(kind="staff", id="F-1"), changed_at=datetime.now(UTC)
    )
    assert REGISTRY.model("rj.participant-links.changed") is ParticipantLinksChanged
    assert fact.reason is None
    with pytest.raises(ValidationError):
        ParticipantLinksChanged(
            case_id="case-1",
            enabled=True,
            changed_by=Actor(kind="staff", id="F-1"),
            changed_at=datetime.now(UTC),
            reason="bad\x00reason",
        )
