"""How a build and a deletion job keep out of each other's way.

A build reads the lakehouse, computes for minutes, then lands: it writes the serving store and commits
its Iceberg state (identity graph, snapshot history). A deletion job that ran in between would have
its work undone by that landing: the build would serve, and write back, the customer it read before
she was deleted. So:

1. **suppressed identifiers never join.** A build reads, before anything else, the keyed hashes of
   every identifier a ``suppress_with_delete`` regulation suppressed, and drops them from the identity
   graph's inputs (:meth:`LandingGuard.suppressed`): a row whose most important identifier is suppressed
   is nobody's, and elsewhere a suppressed identifier is ignored, so no alias item, snapshot or history
   row names them — not even when a record drop or another user's event brings one back.
2. **a fence.** Landing and committing happen inside a lease in the serving store (one conditional
   write; :data:`LEASE_SECONDS`, renewed as the holder works), and a deletion job takes the same lease
   for its whole run. Whoever comes second waits.
3. **a generation.** A deletion job counts itself done (``deletion_generation``) before it gives the
   fence back. A build compares the count it read when it began with the count once it holds the
   fence: if a deletion finished in between, what it read may be what was deleted, so it lets the
   fence go and builds again from the lakehouse as it is now.

Either order is safe: a build that lands first is cleaned by the job that waited for it; a job that
runs first makes the build start again. A holder that dies leaves the fence until its lease runs out.
"""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from customer_context.errors import ConfigError, DeletionRaced, FenceTimeout

if TYPE_CHECKING:
    from customer_context.ports import ContextStore, RegulationStore

LEASE_SECONDS = 900.0  # a Lambda function's longest run: a dead holder's fence is free after it
POLL_SECONDS = 0.5


class Fence:
    """The landing fence, held by one owner at a time (a lease in the serving store).

    Args:
        store: The serving store (``acquire_fence`` / ``release_fence``).
        owner: Who holds it (a build or a regulation id).
        lease_seconds: How long a hold lasts without renewal.
        max_wait_seconds: How long :meth:`acquire` waits for another holder.
        on_wait: Called once if the fence is taken when :meth:`acquire` starts.
    """

    def __init__(self, store: RegulationStore, owner: str, lease_seconds: float = LEASE_SECONDS,
                 max_wait_seconds: float = LEASE_SECONDS + 60, on_wait: Callable[[], None] | None = None) -> None:
        self.store = store
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.max_wait_seconds = max_wait_seconds
        self.on_wait = on_wait
        self.held = False

    def acquire(self) -> None:
        """Take the fence, waiting while someone else holds it.

        Raises:
            FenceTimeout: still taken after ``max_wait_seconds``.
        """
        deadline = time.monotonic() + self.max_wait_seconds
        waited = False
        while not self.store.acquire_fence(self.owner, self.lease_seconds):
            if not waited and self.on_wait is not None:
                self.on_wait()
            waited = True
            if time.monotonic() > deadline:
                raise FenceTimeout(f"the landing fence stayed taken for {self.max_wait_seconds:.0f} s (a build or "
                                   "a deletion job holds it; a holder that died frees it when its lease runs out)")
            time.sleep(POLL_SECONDS)
        self.held = True

    def renew(self) -> None:
        """Extend the lease (the holder is still working)."""
        if self.held:
            self.store.acquire_fence(self.owner, self.lease_seconds)

    def release(self) -> None:
        """Give the fence back (nothing if not held)."""
        if self.held:
            self.held = False
            self.store.release_fence(self.owner)


class LandingGuard:
    """A build's side: what was deleted when it began, and the fence around its landing.

    Args:
        store: The serving store.
        key: The PII hash key (suppression items are keyed hashes of identifiers).
        on_wait: Called if the build must wait for a deletion job to finish.
    """

    def __init__(self, store: ContextStore, key: str, on_wait: Callable[[], None] | None = None) -> None:
        self.store = store
        self.generation = store.deletion_generation()
        self.deleted: set[str] = store.deleted_identifiers()
        self._key = key.encode()
        self.fence = Fence(store, f"build:{uuid.uuid4().hex[:12]}", on_wait=on_wait)

    def suppressed(self, identifiers: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of the ``(type, value)`` identifiers a deletion suppressed (one keyed hash each).

        Raises:
            ConfigError: some are suppressed but no PII key was given to recognise them.
        """
        if not self.deleted:
            return set()
        if not self._key:
            raise ConfigError("CUSTOMER_CONTEXT_PII_HASH_KEY is not set: this build cannot recognise the "
                              "identifiers deleted customers are suppressed by")
        key, deleted = self._key, self.deleted
        return {(t, v) for t, v in identifiers
                if hmac.new(key, f"{t}\x00{v}".encode("utf-8", "surrogatepass"), "sha256").hexdigest() in deleted}

    def enter(self) -> None:
        """Take the fence before landing.

        Raises:
            DeletionRaced: a deletion job finished since the build began (the fence is given back).
        """
        self.fence.acquire()
        if self.store.deletion_generation() != self.generation:
            self.fence.release()
            raise DeletionRaced("a deletion job finished while this build read the lakehouse: building again")

    def exit(self) -> None:
        """Give the fence back."""
        self.fence.release()
