"""An email's bytes, written directly: headers, then text and HTML as ``multipart/alternative``, quoted-printable.

The standard library's ``EmailMessage`` with an SMTP policy parses back every header it is given, folds and
refolds it, and walks a tree of parts to write them: about 680 us a message (py-spy: a fifth of notify's CPU at
30 cases a second). What we send is always the same shape, so it is written here from the standard library's
low-level pieces (``binascii.b2a_qp``, ``email.header.Header``, ``email.utils``): about 50 us. The tests read what
arrives with the standard library's parser (``tests/unit/test_notify_mime.py``).

Nothing here is trusted to the caller: a header value with a line break (or any control character) is refused with
``ValueError`` before anything is written, so no header can be smuggled in.
"""

from __future__ import annotations

import binascii
import re
import secrets
from email.header import Header
from email.headerregistry import Address
from email.policy import SMTP, SMTPUTF8
from email.quoprimime import body_encode

CRLF = b"\r\n"
QP_LINE = 76
MAX_PLAIN_SUBJECT = 900
"""An ASCII subject up to this long goes as it is (a header line may be 998 octets); longer, not ASCII, or holding
what a reader would take for an encoded word (``=?``), it is encoded (RFC 2047) and folded."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_QUOTED = re.compile(r'["\\]')


def _header_safe(value: str, what: str) -> str:
    if _CONTROL.search(value):
        raise ValueError(f"{what} holds a line break or another control character")
    return value


def _subject(subject: str) -> str:
    _header_safe(subject, "subject")
    if subject.isascii() and len(subject) <= MAX_PLAIN_SUBJECT and "=?" not in subject:  # "=?": an encoded word
        return subject
    return Header(subject, "utf-8", header_name="Subject").encode(linesep="\r\n")


def _to(name: str, address: str) -> str:
    """The ``To`` header's value (folded, without the header's name)."""
    if not name:
        return address
    if name.isascii() and address.isascii() and len(name) <= 70 and "=?" not in name:
        quoted = _QUOTED.sub(r"\\\g<0>", name)
        return f'"{quoted}" <{address}>'  # a quoted string keeps every space and special
    # Not ASCII, long, or what a reader would take for an encoded word (or beside an address that is not ASCII): the
    # standard library's policy encodes it word by word (RFC 2047), as readers expect; rarer, and slower (~150 us).
    policy = SMTP if address.isascii() else SMTPUTF8
    folded = policy.header_factory("To", Address(display_name=name, addr_spec=address)).fold(policy=policy)
    return folded.removeprefix("To: ").removesuffix("\r\n")


def _quoted_printable(text: str) -> bytes:
    """``text`` as quoted-printable lines ending in CRLF (soft breaks included), every byte 7-bit, no line over 76
    characters (RFC 2045). ``binascii`` does it in C, but lets a line ending in a space or tab reach 78: such a body
    goes through the standard library's slower encoder instead."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n")
    encoded = binascii.b2a_qp(lines.encode(), istext=True)
    if any(len(line) > QP_LINE for line in encoded.split(b"\n")):
        return body_encode(lines.encode().decode("latin-1"), maxlinelen=QP_LINE, eol="\r\n").encode()  # by byte
    return encoded.replace(b"\n", CRLF)


def mime_email(
    *,
    sender: str,
    recipient: str,
    recipient_name: str,
    subject: str,
    date: str,
    message_id: str,
    text: str,
    html: str,
) -> bytes:
    """The message: ``sender`` and ``recipient`` are bare addresses (already checked as such), ``recipient_name``
    a display name (may be empty; encoded when it is not plain ASCII), ``date`` an RFC 5322 date."""
    for value, what in ((sender, "sender"), (recipient, "recipient"), (date, "date"), (message_id, "Message-ID")):
        _header_safe(value, what)
    # A name is only shown: a control character in it (a tab pasted in with it) becomes a space, rather than the
    # whole message being refused; none can reach the header.
    recipient_name = _CONTROL.sub(" ", recipient_name)
    boundary = f"=_rj_{secrets.token_hex(16)}"  # "=_" never occurs in quoted-printable text: it cannot collide
    head = (
        f"From: {sender}\r\n"
        f"To: {_to(recipient_name, recipient)}\r\n"
        f"Subject: {_subject(subject)}\r\n"
        f"Date: {date}\r\n"
        f"Message-ID: {message_id}\r\n"
        # RFC 3834: an automatic message; out-of-office replies should not answer it.
        "Auto-Submitted: auto-generated\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n'
        "\r\n"
    )
    part = (
        f"--{boundary}\r\n"
        'Content-Type: text/{}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n"
        "\r\n"
    )
    return b"".join(
        (
            head.encode(),  # a non-ASCII address (SMTPUTF8) goes as UTF-8; everything else is ASCII by now
            part.format("plain").encode(),
            _quoted_printable(text),
            CRLF,
            part.format("html").encode(),
            _quoted_printable(html),
            CRLF,
            f"--{boundary}--\r\n".encode(),
        )
    )
