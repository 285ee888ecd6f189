"""Saved responses for `Idempotency-Key` replay, kept 24 h like Stripe keeps them."""

from __future__ import annotations

from stripe_emulator.records import SavedResponse
from stripe_emulator.store import Store

IDEMPOTENCY_TTL_S = 24 * 3600


class IdempotencyKeys:
    def __init__(self, store: Store) -> None:
        self._store = store

    def saved(self, scope_key: str) -> SavedResponse | None:
        with self._store.lock:
            saved = self._store.data.idempotency.get(scope_key)
            if saved is not None and self._store.clock.now() - saved.saved_at >= IDEMPOTENCY_TTL_S:
                del self._store.data.idempotency[scope_key]
                return None
            return saved

    def save(self, scope_key: str, saved: SavedResponse) -> None:
        with self._store.lock:
            self._store.data.idempotency.setdefault(scope_key, saved)
            self._store.dirty = True
