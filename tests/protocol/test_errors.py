"""Errors: stable unique codes, wire round trip, data on variants."""

from __future__ import annotations

import pytest

from protocol import (
    ALL_ERRORS,
    Error,
    FastPayError,
    InsufficientFunding,
    error_from_message,
)
from protocol.errors import ERRORS_BY_CODE


def test_error_codes_are_unique_and_match_class_names():
    codes = [cls.code for cls in ALL_ERRORS]
    assert len(codes) == len(set(codes))
    for cls in ALL_ERRORS:
        assert cls.code == cls.__name__ and issubclass(cls, FastPayError)


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.code)
def test_error_to_message_round_trip(cls: type[FastPayError]):
    err = cls("details")
    message = err.to_message()
    assert message == Error(code=cls.code, message="details")
    back = error_from_message(message)
    assert type(back) is cls and back.message == "details"
    assert cls().message == cls.default_message


def test_error_from_unknown_code_keeps_code():
    err = error_from_message(Error(code="SomethingNew", message="m"))
    assert type(err) is FastPayError and err.wire_code == "SomethingNew"
    assert err.to_message().code == "SomethingNew"


def test_error_variant_data():
    err = InsufficientFunding("low", current_balance=7)
    assert err.current_balance == 7 and str(err) == "low"
    long = FastPayError("x" * 5000).to_message()
    assert len(long.message) == 1024


def test_errors_by_code_complete():
    assert set(ERRORS_BY_CODE) == {cls.code for cls in ALL_ERRORS}
