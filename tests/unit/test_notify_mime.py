"""The email notify writes itself (``services/notify/channels/mime.py``), read back with the standard library's parser,
as a mail client would: every header and both bodies come back as they were given, whatever they hold; nothing can be
smuggled into a header; every line is one SMTP carries."""

from __future__ import annotations

import email
import email.policy
import re
from email.headerregistry import Address
from email.message import EmailMessage

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.notify.channels.mime import mime_email

DATE = "Sat, 28 Nov 2026 10:00:00 +0000"
MESSAGE_ID = "<c39a292378a1fdb93eac4ac23c643d0c@hub.example>"


def write(**overrides: str) -> bytes:
    fields = {
        "sender": "rj-hub@hub.example",
        "recipient": "vivienne@example.org",
        "recipient_name": "Vivienne Okafor",
        "subject": "Your restorative justice meeting",
        "date": DATE,
        "message_id": MESSAGE_ID,
        "text": "Dear Vivienne,\nYour meeting is on Saturday.",
        "html": "<p>Dear Vivienne,</p><p>Your meeting is on <strong>Saturday</strong>.</p>",
    }
    return mime_email(**(fields | overrides))


def read(content: bytes) -> EmailMessage:
    message = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert not message.defects, message.defects
    return message


def name_as_stdlib_reads_it(name: str, address: str = "vivienne@example.org") -> str:
    """A display name as the standard library's own ``EmailMessage`` writes it and reads it back: the reference for
    names encoded through its policy (not ASCII, long, or holding ``=?``; it loses a space here and there in very long
    ones, and reads ``=?...?=`` as an encoded word, as it always did for us)."""
    reference = EmailMessage(policy=email.policy.SMTP if address.isascii() else email.policy.SMTPUTF8)
    reference["To"] = Address(display_name=name, addr_spec=address)
    reread = email.message_from_string(reference.as_string(), policy=email.policy.default)
    return str(reread["To"].addresses[0].display_name)


def expected_name(name: str) -> str:
    plain = name.isascii() and len(name) <= 70 and "=?" not in name
    return name if plain else name_as_stdlib_reads_it(name)


def body(message: EmailMessage, kind: str) -> str:
    part = message.get_body(preferencelist=(kind,))
    assert part is not None and not part.defects, kind
    return str(part.get_content()).replace("\r\n", "\n")


def test_a_message_reads_back_as_text_and_html_alternatives_with_every_header() -> None:
    message = read(write())
    assert message["From"] == "rj-hub@hub.example"
    [to] = message["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Vivienne Okafor", "vivienne@example.org")
    assert message["Subject"] == "Your restorative justice meeting"
    assert message["Date"].datetime.isoformat() == "2026-11-28T10:00:00+00:00"
    assert message["Message-ID"] == MESSAGE_ID
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert body(message, "plain") == "Dear Vivienne,\nYour meeting is on Saturday."
    assert body(message, "html") == "<p>Dear Vivienne,</p><p>Your meeting is on <strong>Saturday</strong>.</p>"


def test_names_subjects_and_bodies_in_any_language_read_back_unchanged() -> None:
    text = "Annwyl Siân,\nEich cyfarfod: dydd Sadwrn 🙂\n" + "x" * 300 + "\n.\nFrom here on\ntrailing space \n= =3D\n"
    text += "y" * 74 + " \n" + "z" * 75 + "\t\n"  # a line ending in white space, at the length where binascii overruns
    message = read(write(recipient_name="Siân O'Brien, née Dòmhnall", subject="Eich cyfarfod — dydd Sadwrn", text=text))
    assert message["To"].addresses[0].display_name == "Siân O'Brien, née Dòmhnall"
    assert message["Subject"] == "Eich cyfarfod — dydd Sadwrn"
    assert body(message, "plain") == text


def test_an_address_whose_domain_is_not_ascii_goes_as_utf8_smtputf8() -> None:
    content = write(recipient="sian@enghraifft-ŵ.cymru", recipient_name="Siân")
    assert "To: Siân <sian@enghraifft-ŵ.cymru>\r\n".encode() in content  # RFC 6532: UTF-8 in the header itself
    message = email.message_from_string(content.decode(), policy=email.policy.default)  # headers in UTF-8 (RFC 6532)
    [to] = message["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Siân", "sian@enghraifft-ŵ.cymru")


@pytest.mark.parametrize("field", ["subject", "recipient", "sender", "message_id"])
@pytest.mark.parametrize("smuggled", ["\r\nBcc: someone@elsewhere.example", "\nBcc: x@y.example", "a\rb", "nul\x00"])
def test_a_line_break_or_control_character_in_any_header_is_refused(field: str, smuggled: str) -> None:
    with pytest.raises(ValueError, match="control character"):
        write(**{field: f"value{smuggled}"})


def test_a_control_character_in_the_recipients_name_becomes_a_space_and_the_email_still_goes() -> None:
    content = write(recipient_name="Kit\tMarlowe\r\nBcc: someone@elsewhere.example")
    message = read(content)
    assert message["Bcc"] is None and b"\r\nBcc:" not in content
    assert message["To"].addresses[0].display_name == "Kit Marlowe  Bcc: someone@elsewhere.example"


def body_lines(content: bytes) -> list[bytes]:
    """The lines of the message's two parts' bodies, as written (quoted-printable)."""
    boundary = email.message_from_bytes(content).get_boundary()
    assert boundary
    lines = []
    for part in content.split(f"--{boundary}".encode())[1:-1]:
        _, _, encoded = part.partition(b"\r\n\r\n")
        lines += encoded.split(b"\r\n")
    return lines


printable = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=200)
names = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)
bodies = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=2000)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=printable, name=names, text=bodies, html=bodies)
def test_whatever_they_hold_every_header_and_body_reads_back_and_every_line_fits_smtp(
    subject: str, name: str, text: str, html: str
) -> None:
    content = write(subject=subject, recipient_name=name, text=text, html=html)
    assert content.isascii()
    lines = content.split(b"\r\n")
    assert all(b"\r" not in line and b"\n" not in line and len(line) <= 998 for line in lines)
    assert all(len(line) <= 76 for line in body_lines(content))  # RFC 2045's limit for quoted-printable
    message = read(content)
    assert message["Subject"].strip(" \t") == subject.strip(" \t")
    [to] = message["To"].addresses
    assert to.addr_spec == "vivienne@example.org"
    assert to.display_name == expected_name(re.sub(r"[\x00-\x1f\x7f]", " ", name))
    newlines = {"\r\n": "\n", "\r": "\n"}
    for kind, given_ in (("plain", text), ("html", html)):
        expected = given_
        for old, new in newlines.items():
            expected = expected.replace(old, new)
        assert body(message, kind) == expected


@pytest.mark.parametrize(
    "value",
    [
        "=?utf-8?q?looks_encoded?=",
        'a "quoted" \\ name',
        "x" * 2000,
        "word " * 300,
        "word " * 40,
        "Siân " * 40,
        "   padded   ",
        "<not@an.address>",
        "semi; colon, comma: (comment)",
    ],
)
def test_a_subject_or_name_that_looks_like_syntax_reads_back_as_itself(value: str) -> None:
    message = read(write(subject=value, recipient_name=value))
    assert message["Subject"] == value.lstrip()  # a header's value begins after the space that follows its colon
    [to] = message["To"].addresses
    assert (to.addr_spec, to.display_name) == ("vivienne@example.org", expected_name(value))
