"""What a message says (the templates helper's module; this stand-in holds only ``Rendered``)."""

from pydantic import BaseModel


class Rendered(BaseModel, frozen=True):
    subject: str  # one line, no line breaks
    text: str  # plain text body (email text part, SMS, letter body)
    html: str  # HTML body (email HTML part; the letter PDF is rendered from it)
    sms: str  # a short form for SMS (<= 612 chars, 4 fragments), no link shorteners
