"""The receiver over real HTTP: stored once, every bad input refused, 503 while the DB is down."""

from __future__ import annotations

import json
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from billing_pipeline.db import migrate
from billing_pipeline.db.engine import make_engine
from billing_pipeline.webhooks.app import create_app
from billing_pipeline_tests.support.databases import create_database, drop_database
from billing_pipeline_tests.support.network import free_port
from billing_pipeline_tests.support.webhooks import (
    OLD_SECRET,
    SECRET,
    T0,
    checkout_completed,
    dumps,
    inbox_rows,
    serve,
    sign,
)


def post(url: str, body: str | bytes, signature: str | None) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return requests.post(f"{url}/webhooks/stripe", data=body, headers=headers, timeout=10)


def test_verified_event_is_stored_with_its_fields(receiver_url: str, engine: Engine) -> None:
    payload = checkout_completed(7, "cus_A", "sub_A", T0)
    body = dumps(payload)

    response = post(receiver_url, body, sign(body))

    assert response.status_code == 200
    [row] = inbox_rows(engine)
    assert row["event_id"] == payload["id"]
    assert row["event_type"] == "checkout.session.completed"
    assert row["stripe_created"].timestamp() == T0
    assert row["stripe_created"].utcoffset().total_seconds() == 0
    assert row["livemode"] is False
    assert row["api_version"] == "2025-03-31.basil"
    assert row["payload"] == payload
    assert row["status"] == "pending"
    assert row["received_at"] is not None


def test_previous_secret_still_verifies_during_rotation(receiver_url: str, engine: Engine) -> None:
    body = dumps(checkout_completed(7, "cus_A", "sub_A", T0))

    assert post(receiver_url, body, sign(body, OLD_SECRET)).status_code == 200
    assert len(inbox_rows(engine)) == 1


def test_concurrent_duplicate_deliveries_leave_one_row(receiver_url: str, engine: Engine) -> None:
    bodies = [dumps(checkout_completed(7, f"cus_{i}", f"sub_{i}", T0 + i)) for i in range(5)]
    deliveries = [body for body in bodies for _ in range(8)]

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(
            pool.map(lambda body: post(receiver_url, body, sign(body)).status_code, deliveries)
        )

    assert statuses == [200] * len(deliveries)
    # Forty deliveries of five events, racing each other: exactly one row per event.
    stored = [row["event_id"] for row in inbox_rows(engine)]
    assert sorted(stored) == sorted(json.loads(body)["id"] for body in bodies)


@pytest.mark.parametrize(
    "case",
    [
        "missing header",
        "wrong secret",
        "expired timestamp",
        "body altered after signing",
        "signature over re-serialised JSON",
        "garbage header",
        "non-ASCII header",
        "non-UTF-8 body",
    ],
)
def test_bad_signature_is_400_and_nothing_is_stored(
    receiver_url: str, engine: Engine, case: str
) -> None:
    payload = checkout_completed(7, "cus_A", "sub_A", T0)
    body: str | bytes = dumps(payload)
    signature: str | None = sign(str(body))
    if case == "missing header":
        signature = None
    elif case == "wrong secret":
        signature = sign(str(body), "whsec_someone_else")
    elif case == "expired timestamp":
        signature = sign(str(body), timestamp=int(time.time()) - 301)
    elif case == "body altered after signing":
        body = str(body).replace("cus_A", "cus_B")
    elif case == "signature over re-serialised JSON":
        signature = sign(dumps(payload).replace("\n", "").replace("  ", ""))
    elif case == "garbage header":
        signature = "t=abc,v1=zz"
    elif case == "non-ASCII header":
        signature = "t=1,v1=é".encode().decode("latin-1")
    elif case == "non-UTF-8 body":
        body = b"\xff\xfe" + str(body).encode()
        signature = sign(str(body))

    response = post(receiver_url, body, signature)

    # The event is refused before any database access: the inbox stays empty.
    assert response.status_code == 400
    assert inbox_rows(engine) == []


@pytest.mark.parametrize(
    "body",
    [
        "{not json",
        "[1, 2]",
        '{"id": "evt_1", "object": "event"}',
        '{"id": "evt_1", "object": "event", "type": "x", "created": "yesterday", '
        '"livemode": false, "data": {"object": {}}}',
        '{"id": "evt_1", "object": "event", "type": "x", "created": NaN, '
        '"livemode": false, "data": {"object": {}}}',
        '{"id": "evt_1", "object": "v2.core.event", "type": "x", "created": 1, '
        '"livemode": false, "data": {"object": {}}}',
        '{"id": "evt_1", "object": "event", "type": "x", "created": 1, "livemode": false, '
        '"data": {"object": {"note": "nul \\u0000 byte"}}}',
    ],
    ids=["truncated", "array", "no type", "bad created", "NaN", "thin event", "NUL escape"],
)
def test_signed_but_malformed_event_is_400_and_nothing_is_stored(
    receiver_url: str, engine: Engine, body: str
) -> None:
    response = post(receiver_url, body, sign(body))

    # Genuinely signed, yet nothing the processor could order or dedupe: refused, inbox empty.
    assert response.status_code == 400
    assert inbox_rows(engine) == []


def test_declared_oversized_body_is_413_without_being_read(
    receiver_url: str, engine: Engine
) -> None:
    host, port = receiver_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        # Declares 10 MiB but sends none of it: a server reading the body would hang until the
        # socket timeout instead of answering.
        connection.sendall(
            b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Stripe-Signature: t=1,v1=00\r\nContent-Length: 10485760\r\n\r\n"
        )
        status_line = connection.recv(200).split(b"\r\n")[0]

    assert status_line.split()[1] == b"413"
    assert inbox_rows(engine) == []


def test_chunked_oversized_body_is_413(receiver_url: str, engine: Engine) -> None:
    chunks = (b"x" * 16 * 1024 for _ in range(8))  # 128 KiB against a 64 KiB limit

    response = requests.post(
        f"{receiver_url}/webhooks/stripe",
        data=chunks,
        headers={"Stripe-Signature": "t=1,v1=00"},
        timeout=10,
    )

    # Refused with no declared length too, the limit counted while streaming; nothing stored.
    assert response.status_code == 413
    assert inbox_rows(engine) == []


def test_healthz(receiver_url: str) -> None:
    response = requests.get(f"{receiver_url}/healthz", timeout=5)

    assert response.status_code == 200
    assert response.json()["message"] == "ok"


def test_refuses_to_start_without_a_secret(database_url: str) -> None:
    with pytest.raises(ValueError, match="STRIPE_WEBHOOK_SECRET"):
        create_app(database_url, [])
    with pytest.raises(ValueError, match="STRIPE_WEBHOOK_SECRET"):
        create_app(database_url, [" ", ""])


def test_database_refusing_connections_is_503(engine: Engine) -> None:
    app = create_app(f"postgresql://nobody@127.0.0.1:{free_port()}/nothing", [SECRET])
    body = dumps(checkout_completed(7, "cus_A", "sub_A", T0))

    with serve(app) as url:
        response = post(url, body, sign(body))

    # 503 tells Stripe to retry; nothing reached any inbox.
    assert response.status_code == 503
    assert response.headers["Retry-After"]


def test_503_while_database_is_gone_then_redelivery_succeeds(postgres_server_url: str) -> None:
    url = create_database(postgres_server_url, "webhooks_outage")
    migrate.upgrade(url, migrate.BILLING_HEAD)
    name = make_url(url).database
    admin = make_engine(postgres_server_url, pool_size=1).execution_options(
        isolation_level="AUTOCOMMIT"
    )
    inbox_engine = make_engine(url, pool_size=1)
    first = dumps(checkout_completed(7, "cus_A", "sub_A", T0))
    second = dumps(checkout_completed(8, "cus_B", "sub_B", T0 + 1))
    try:
        with serve(create_app(url, [SECRET])) as receiver_url:
            assert post(receiver_url, first, sign(first)).status_code == 200
            with admin.connect() as connection:
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
                    ),
                    {"n": name},
                )
                connection.execute(text(f'ALTER DATABASE "{name}" RENAME TO "{name}_away"'))

            # The database is unreachable: Stripe is told to retry, and nothing is lost.
            assert post(receiver_url, second, sign(second)).status_code == 503

            with admin.connect() as connection:
                connection.execute(text(f'ALTER DATABASE "{name}_away" RENAME TO "{name}"'))
            # Stripe's redelivery of the same event, freshly signed, now lands.
            assert post(receiver_url, second, sign(second)).status_code == 200

        assert len(inbox_rows(inbox_engine)) == 2
    finally:
        inbox_engine.dispose()
        admin.dispose()
        drop_database(postgres_server_url, url)


def test_logs_carry_no_secret_and_no_payload(
    receiver_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = dumps(checkout_completed(7, "cus_secretive", "sub_A", T0))

    post(receiver_url, body, sign(body))
    post(receiver_url, body, sign(body, "whsec_wrong"))
    post(receiver_url, "{bad", sign("{bad"))

    assert caplog.records
    for secret in (SECRET, OLD_SECRET, "whsec_wrong", "cus_secretive"):
        assert secret not in caplog.text


def test_other_methods_and_paths_are_answered_405_and_404_and_store_nothing(
    receiver_url: str, engine: Engine
) -> None:
    for path in ("/webhooks/stripe", "/webhooks/stripe/thin"):
        for method in ("GET", "PUT", "DELETE"):
            response = requests.request(method, f"{receiver_url}{path}", timeout=10)
            assert response.status_code == 405
            assert "POST" in response.headers["Allow"]
            assert response.json() == {"status": 405, "message": "method not allowed"}
    missing = requests.post(f"{receiver_url}/webhooks/other", data="{}", timeout=10)
    assert (missing.status_code, missing.json()["status"]) == (404, 404)
    assert inbox_rows(engine) == []
