"""`/v1/test_helpers/test_clocks`: Stripe's Test Clocks, and what "now" is for a customer.

Stripe's model (docs "Test Clocks", API reference `test_helpers.test_clock`): a clock has a
`frozen_time`; customers created with `test_clock=clock_…` live at that time, and so do their
subscriptions and invoices. Advancing the clock (`POST …/advance`, only forwards) answers at
once with `status: advancing`; Stripe then runs, in order, everything that fell due on the way
(period ends, invoice finalization) and the clock becomes `ready`. A clock moves at most two
intervals of its shortest subscription (two years without one) per advance. Here that work is done
before the answer is sent, so a client that polls `GET …/{id}` until `ready` (as it must with
Stripe) sees it done on the first poll.

How the emulator's own clock and test clocks relate (an emulator choice, see the README):
- a customer's now is its test clock's `frozen_time` if it has one, else the emulator clock;
  meter events for that customer are checked (35 days back, 5 minutes ahead) and received at
  that time, and its subscriptions start, change and cancel at that time;
- objects carry that time (`created`, periods, `status_transitions`), while the events about
  them are `created` on the emulator clock, as Stripe stamps events with real time;
- moving the emulator clock never moves a test clock, and advancing a test clock never moves
  the emulator clock or another test clock's customers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from stripe_emulator.billing_periods import boundary
from stripe_emulator.errors import existing, invalid
from stripe_emulator.events import Events
from stripe_emulator.ids import new_id
from stripe_emulator.pagination import int_param, paginate
from stripe_emulator.params import reject_unemulated
from stripe_emulator.store import Store

RETENTION_S = 30 * 86400
_MONTH = {"interval": "month", "interval_count": 1}
RunDue = Callable[[str, int], None]


class TestClocks:
    __test__ = False  # not a pytest class, despite the name

    def __init__(self, store: Store, events: Events) -> None:
        self._store = store
        self._events = events

    def clock_of(self, customer_id: str) -> str | None:
        """The test clock a customer is attached to, if any."""
        with self._store.lock:
            customer = self._store.data.customers.get(customer_id)
            clock_id = customer.get("test_clock") if customer else None
            return clock_id if clock_id in self._store.data.test_clocks else None

    def now_for(self, customer_id: str | None) -> int:
        """The customer's now: its test clock's frozen time, else the emulator clock."""
        with self._store.lock:
            clock_id = self.clock_of(customer_id) if customer_id else None
            if clock_id is None:
                return self._store.clock.now()
            frozen: int = self._store.data.test_clocks[clock_id]["frozen_time"]
            return frozen

    def create(self, params: dict[str, Any], request: dict[str, str | None]) -> dict[str, Any]:
        reject_unemulated(params, {"frozen_time", "name", "expand"})
        frozen_time = int_param(params, "frozen_time")
        with self._store.lock:
            now = self._store.clock.now()
            clock: dict[str, Any] = {
                "id": new_id("clock_", 24),
                "object": "test_helpers.test_clock",
                "created": now,
                "deletes_after": now + RETENTION_S,
                "frozen_time": frozen_time,
                "livemode": False,
                "name": params.get("name"),
                "status": "ready",
                "status_details": {},
            }
            self._store.data.test_clocks[clock["id"]] = clock
            self._store.dirty = True
            self._events.emit("test_helpers.test_clock.created", clock, request=request)
            return clock

    def retrieve(self, clock_id: str) -> dict[str, Any]:
        with self._store.lock:
            return existing(self._store.data.test_clocks, "test_clock", clock_id)

    def list_page(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._store.lock:
            clocks = list(reversed(self._store.data.test_clocks.values()))
        return paginate(clocks, params, "/v1/test_helpers/test_clocks")

    def advance(
        self,
        clock_id: str,
        params: dict[str, Any],
        run_due: RunDue,
        request: dict[str, str | None],
    ) -> dict[str, Any]:
        """Move the clock forward, running every billing action due up to `frozen_time`.

        `run_due(clock_id, until)` is the billing scheduler; it sets the clock's frozen time to
        each action's instant as it goes, so what it produces carries that instant.
        """
        reject_unemulated(params, {"frozen_time", "expand"})
        target = int_param(params, "frozen_time")
        assert target is not None
        with self._store.lock:
            clock = self.retrieve(clock_id)
            if target <= clock["frozen_time"]:
                raise invalid(
                    "The frozen_time must be after the test clock's current frozen_time "
                    f"({clock['frozen_time']}).",
                    param="frozen_time",
                )
            limit = self._advance_limit(clock)
            if target > limit:
                raise invalid(
                    "The frozen_time cannot be more than two intervals in the future from the "
                    f"shortest subscription in this test clock ({limit}).",
                    param="frozen_time",
                )
            clock["status"] = "advancing"
            clock["status_details"] = {"advancing": {"target_frozen_time": target}}
            self._events.emit("test_helpers.test_clock.advancing", clock, request=request)
            answer: dict[str, Any] = json.loads(json.dumps(clock))
            run_due(clock_id, target)
            clock.update(frozen_time=target, status="ready", status_details={})
            self._store.dirty = True
            self._events.emit("test_helpers.test_clock.ready", clock)
            return answer

    def _advance_limit(self, clock: dict[str, Any]) -> int:
        """Stripe's limit (API reference, advance a test clock): two intervals of the clock's
        shortest live subscription, or two years without one."""
        frozen: int = clock["frozen_time"]
        limits = [
            boundary(frozen, recurring["interval"], recurring["interval_count"], 2)
            for subscription in self._store.data.subscriptions.values()
            if subscription["test_clock"] == clock["id"] and subscription["status"] != "canceled"
            for recurring in [subscription["items"]["data"][0]["price"].get("recurring", _MONTH)]
        ]
        return min(limits, default=boundary(frozen, "year", 1, 2))

    def delete(self, clock_id: str) -> dict[str, Any]:
        """Stripe deletes a clock with every object attached to it."""
        with self._store.lock:
            self.retrieve(clock_id)
            data = self._store.data
            del data.test_clocks[clock_id]
            gone = {c for c, obj in data.customers.items() if obj.get("test_clock") == clock_id}
            for table in (data.subscriptions, data.invoices):
                for object_id in [i for i, obj in table.items() if obj["customer"] in gone]:
                    del table[object_id]
            for customer_id in gone:
                del data.customers[customer_id]
            self._store.dirty = True
            return {"id": clock_id, "object": "test_helpers.test_clock", "deleted": True}
