"""Fuzzing the receiver_url over real HTTP: never a 500, never an unverified event stored."""

from __future__ import annotations

import json
import time

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from billing_pipeline_tests.support.webhooks import (
    SECRET,
    T0,
    checkout_completed,
    dumps,
    inbox_rows,
    sign,
)

# What can travel in an HTTP header: Latin-1 without control characters.
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=120,
).map(str.strip)

signature_like = st.builds(
    lambda t, scheme, sig, extra: f"t={t},{scheme}={sig}{extra}",
    st.one_of(st.integers(-(10**20), 10**20).map(str), header_text),
    st.sampled_from(["v1", "v0", "V1", "", "t"]),
    st.one_of(st.text(alphabet="0123456789abcdef", max_size=70), header_text),
    st.one_of(st.just(""), header_text.map(lambda extra: "," + extra)),
)

bodies = st.one_of(
    st.binary(max_size=2000),
    st.text(max_size=500).map(str.encode),
    st.just(dumps(checkout_completed(1, "cus_F", "sub_F", T0)).encode()),
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)

event_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=30), json_values),
        "object": st.sampled_from(["event", "v2.core.event", "list", 3]),
        "type": st.one_of(st.sampled_from(["invoice.paid", ""]), json_values),
        "created": st.one_of(st.integers(-(10**15), 10**15), json_values),
        "livemode": json_values,
        "api_version": json_values,
        "data": st.one_of(st.fixed_dictionaries({"object": json_values}), json_values),
    },
)

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(body=bodies, signature=st.one_of(st.none(), header_text, signature_like))
def test_unverifiable_requests_are_refused_and_never_stored(
    receiver_url: str, engine: Engine, body: bytes, signature: str | None
) -> None:
    headers = {} if signature is None else {"Stripe-Signature": signature}

    response = requests.post(
        f"{receiver_url}/webhooks/stripe", data=body, headers=headers, timeout=10
    )

    # None of these carries a valid signature: refused as a client error, inbox untouched.
    assert response.status_code in (400, 413)
    assert inbox_rows(engine) == []


@FUZZ
@given(payload=event_like, stale=st.booleans())
def test_signed_odd_events_never_500_and_only_verified_ones_are_stored(
    receiver_url: str, engine: Engine, payload: dict[str, object], stale: bool
) -> None:
    body = json.dumps(payload)
    timestamp = int(time.time()) - (400 if stale else 0)
    before = {row["event_id"] for row in inbox_rows(engine)}

    response = requests.post(
        f"{receiver_url}/webhooks/stripe",
        data=body.encode(),
        headers={"Stripe-Signature": sign(body, SECRET, timestamp)},
        timeout=10,
    )

    assert response.status_code in (200, 400)
    added = {row["event_id"] for row in inbox_rows(engine)} - before
    if stale:
        # Outside the 300 s tolerance: a possible replay, refused and not stored.
        assert response.status_code == 400
        assert added == set()
    elif response.status_code == 200:
        # A well-formed verified event: stored (or already stored) under its own id.
        assert payload["id"] in before | added
    else:
        # Verified but malformed: nothing new in the inbox.
        assert added == set()
