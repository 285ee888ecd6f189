"""`billing-pipeline stripe-emulator`: serve the emulator, or send a signed webhook event.

`stripe-emulator --port PORT` serves; `stripe-emulator trigger EVENT_TYPE --url … --secret …`
plays the part of `stripe trigger` for the webhook receiver. Heavy imports stay in the handlers
so the top-level `--help` stays instant.
"""

from __future__ import annotations

import argparse
from typing import Any

DEFAULT_PORT = 12111


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "stripe-emulator",
        help="Run the local Stripe emulator (or trigger a signed webhook event).",
        description="A local, stateful Stripe emulator for Billing Meters, used by the demo and "
        "the tests. Without a subcommand it serves until Ctrl-C or SIGTERM.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: any free port)")
    parser.add_argument("--webhook-secret", help="whsec_… signing secret (default: new)")
    parser.add_argument(
        "--webhook-url", help="webhook endpoint for snapshot events (customer.subscription.*)"
    )
    parser.add_argument(
        "--event-destination-url", help="event destination for thin error-report events"
    )
    parser.add_argument("--state-file", help="JSON file to keep state across restarts")
    parser.add_argument(
        "--last-mode",
        choices=("timestamp", "arrival"),
        default="timestamp",
        help="raw `last` meters: latest timestamp or latest arrival wins (default: timestamp)",
    )
    parser.add_argument(
        "--newer",
        choices=("arrival", "timestamp"),
        default="arrival",
        help="pre-aggregated meters keep each window's latest arrival or latest timestamp "
        "(ties by arrival) (default: arrival)",
    )
    parser.add_argument(
        "--negative-values",
        choices=("allowed", "refused"),
        default="allowed",
        help="whether meter event values may be negative (Stripe's v1 and v2 references "
        "disagree) (default: allowed)",
    )
    parser.set_defaults(handler=_serve)

    sub = parser.add_subparsers(dest="emulator_command", metavar="SUBCOMMAND")
    trigger = sub.add_parser(
        "trigger", help="Send one signed Stripe webhook event to a URL, like `stripe trigger`."
    )
    from stripe_emulator.webhook_events import EVENT_TYPES, SUBSCRIPTION_STATUSES

    trigger.add_argument("event_type", choices=EVENT_TYPES, metavar="EVENT_TYPE")
    trigger.add_argument("--url", required=True, help="webhook receiver URL")
    trigger.add_argument("--secret", required=True, help="the receiver's whsec_… signing secret")
    trigger.add_argument("--customer", help="cus_… id (default: generated)")
    trigger.add_argument("--subscription", help="sub_… id (default: generated)")
    trigger.add_argument("--organization-id", type=int, help="goes into metadata.organization_id")
    trigger.add_argument("--status", choices=SUBSCRIPTION_STATUSES, help="subscription status")
    trigger.set_defaults(handler=_trigger)


def _serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from stripe_emulator.server import StripeEmulator

    emulator = StripeEmulator(
        port=args.port,
        host=args.host,
        webhook_secret=args.webhook_secret,
        state_file=args.state_file,
        last_mode=args.last_mode,
        newer_mode=args.newer,
        negative_values=args.negative_values,
    ).start()
    if args.webhook_url:
        emulator.control.set_webhook_endpoint(args.webhook_url)
    if args.event_destination_url:
        emulator.control.set_event_destination(args.event_destination_url)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"Stripe emulator listening on {emulator.url}", flush=True)
    print(f"STRIPE_API_BASE={emulator.url}", flush=True)
    print(f"STRIPE_WEBHOOK_SECRET={emulator.webhook_secret}", flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    print("Stripe emulator stopped.", flush=True)
    return 0


def _trigger(args: argparse.Namespace) -> int:
    from stripe_emulator.webhook_events import TriggerOptions, build_event
    from stripe_emulator.webhooks import deliver

    event = build_event(
        args.event_type,
        TriggerOptions(
            customer=args.customer,
            subscription=args.subscription,
            organization_id=args.organization_id,
            status=args.status,
        ),
    )
    status = deliver(args.url, args.secret, event)
    print(f"{event['type']} {event['id']} -> {args.url}: HTTP {status}", flush=True)
    return 0 if 200 <= status < 300 else 1
