"""Signature verification against the stripe SDK's own signing, including rotation."""

from __future__ import annotations

import time

import pytest

from billing_pipeline.webhooks.verify import InvalidSignatureError, parse_secrets, verify_signature
from billing_pipeline_tests.support.webhooks import OLD_SECRET, SECRET, sign

BODY = '{"id": "evt_1", "object": "event", "note": "caf\u00e9"}'


def test_any_configured_secret_verifies_and_the_text_is_returned() -> None:
    for secret in (SECRET, OLD_SECRET):
        assert verify_signature(BODY.encode(), sign(BODY, secret), [SECRET, OLD_SECRET]) == BODY


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "t=1,v1=é",  # hmac.compare_digest raises TypeError on non-ASCII text
        "v1=abc",
        "t=notanumber,v1=abc",
        "t=" + "9" * 5000 + ",v1=abc",
    ],
)
def test_unparseable_headers_are_invalid_signatures(header: str | None) -> None:
    with pytest.raises(InvalidSignatureError):
        verify_signature(BODY.encode(), header, [SECRET])


def test_signature_outside_tolerance_is_refused() -> None:
    with pytest.raises(InvalidSignatureError):
        verify_signature(BODY.encode(), sign(BODY, timestamp=int(time.time()) - 301), [SECRET])
    assert verify_signature(BODY.encode(), sign(BODY, timestamp=int(time.time()) - 290), [SECRET])


def test_error_messages_never_carry_the_secret_or_body() -> None:
    with pytest.raises(InvalidSignatureError) as caught:
        verify_signature(BODY.encode(), sign(BODY, "whsec_other"), [SECRET])
    assert SECRET not in str(caught.value) and "evt_1" not in str(caught.value)


def test_parse_secrets_splits_rotation_lists() -> None:
    assert parse_secrets(" whsec_a, whsec_b ,,") == ("whsec_a", "whsec_b")
    assert parse_secrets(None) == ()
