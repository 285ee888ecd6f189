"""The Stripe emulator, started with many customers already in it (a benchmark's setup).

    python -m bench.seeded_emulator ORGANIZATIONS_FILE CUSTOMERS_FILE

Creating 100,000 customers through `POST /v1/customers` takes minutes at the emulator's few
hundred requests a second on 2 cores, and none of it is what a benchmark measures. This process
creates them with the emulator's own `Customers.create` (the code that HTTP route runs, the same
store and ids, `metadata.organization_id` set as the demo does) before it starts serving, writes
`organization_id<TAB>customer_id` lines to CUSTOMERS_FILE, then serves exactly as
`billing-pipeline stripe-emulator --port 0` does (and prints the same `STRIPE_API_BASE=` line).
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from stripe_emulator.server import StripeEmulator


def main() -> int:
    organizations_file, customers_file = sys.argv[1:3]
    emulator = StripeEmulator(port=0)
    customers = emulator.state.customers
    lines = []
    for line in Path(organizations_file).read_text().split():
        customer = customers.create({"metadata": {"organization_id": line}})
        lines.append(f"{line}\t{customer['id']}\n")
    Path(customers_file).write_text("".join(lines))
    emulator.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"STRIPE_API_BASE={emulator.url}", flush=True)
    try:
        stop.wait()
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
