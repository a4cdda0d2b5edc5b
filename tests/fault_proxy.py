"""A loopback HTTP proxy that makes a share of GCS API requests fail, for fault-injection tests.

Every `every`-th request fails, cycling through three faults real clients meet:
  503      the server answers 503 Service Unavailable without acting on the request;
  reset    the connection drops before the request reaches the server;
  lost     the request takes effect upstream, then the connection drops before the answer
           (the client cannot know it succeeded: retries must be idempotent).
Bounded: it serves only while its context is open and counts what it injected.

A chunk of a resumable upload (`PUT …upload_id=`) gets only the first two: after a lost
answer the client resends the chunk from its last confirmed offset, and the emulator
answers that overlap with 400 (it models no recovery of a session's persisted range), so
a "lost" chunk would test the emulator, not our code.
"""

from __future__ import annotations

from collections import Counter

from tests.relay_proxy import LOST, RESET, Answer, RelayProxy, Request

FAULTS = ("503", RESET, LOST)


class FaultProxy(RelayProxy):
    """`with FaultProxy(upstream="127.0.0.1:9023", every=5) as proxy:` -> proxy.address."""

    def __init__(self, upstream: str, every: int) -> None:
        super().__init__(upstream)
        self.every = every
        self.requests = 0
        self.injected: Counter[str] = Counter()

    def intercept(self, request: Request) -> Answer | str | None:
        fault = self._next_fault(resumable_chunk=request.method == "PUT" and "upload_id=" in request.target)
        if fault == "503":
            return Answer(503, "Service Unavailable", [], b"")
        return fault

    def _next_fault(self, resumable_chunk: bool) -> str | None:
        with self._lock:
            self.requests += 1
            if self.requests % self.every:
                return None
            kinds = FAULTS[:2] if resumable_chunk else FAULTS
            fault = kinds[(self.requests // self.every) % len(kinds)]
            self.injected[fault] += 1
            return fault
