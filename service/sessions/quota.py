"""Per-owner create rate: a token bucket, shared by the in-memory store's owners."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    """`burst` tokens, refilled at `rate` per second; a create takes one."""

    tokens: float
    stamp: float

    def take(self, now: float, rate: float, burst: int) -> float:
        """0.0 when a token was taken, else the seconds until one is available."""
        self.tokens = min(float(burst), self.tokens + (now - self.stamp) * rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / rate
