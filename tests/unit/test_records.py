"""Reasons and logs say what went wrong, never the values: a pydantic error quotes its input, which may be a
victim's details opened for the handler."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from services.runtime.records import describe_error


class Person(BaseModel):
    age: int


def test_a_validation_error_is_described_without_its_input() -> None:
    with pytest.raises(ValidationError) as caught:
        Person.model_validate({"age": "Philippa Quennell, 17 Larkspur Mews"})
    assert "Larkspur" in str(caught.value)  # what pydantic itself would have put in the reason
    described = describe_error(caught.value)
    assert "Larkspur" not in described and "Philippa" not in described
    assert described.startswith("age: Input should be a valid integer")
    assert describe_error(caught.value, typed=True).startswith("ValidationError: age: ")


def test_other_errors_keep_their_text_and_say_their_type_unless_they_are_value_errors() -> None:
    assert describe_error(ValueError("a bad date")) == "a bad date"
    assert describe_error(ValueError("a bad date"), typed=True) == "ValueError: a bad date"
    assert describe_error(KeyError("x")) == "KeyError: 'x'"
