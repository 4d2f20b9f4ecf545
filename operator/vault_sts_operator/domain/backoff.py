"""client-go's reflector backoff: `wait.NewExponentialBackoffManager(800ms, 30s, 2min, 2.0, 1.0)`.

Each failure waits the current step plus up to `jitter` times that step (client-go's `wait.Jitter`: a delay in
[d, d * (1 + jitter))), and the step doubles up to the cap: 0.8 s, 1.6 s, ... 25.6 s, then 30 s, so with
jitter 1.0 the waits settle in [30 s, 60 s). After `reset_after` seconds without a failure the next one starts
from the initial step again (client-go measures that from the previous backoff, as here).

Hand-written: tenacity's and backoff's jittered waits draw from [0, d] ("full jitter") or add an absolute
amount, and neither forgets its step after a quiet period; what this reproduces is client-go's, step by step.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ExponentialBackoff:
    initial: float = 0.8
    cap: float = 30.0
    reset_after: float = 120.0
    factor: float = 2.0
    jitter: float = 1.0
    _step: float = field(default=0.0, init=False)
    _last: float | None = field(default=None, init=False)

    def next_delay(self, now: float, rand: float) -> float:
        """The wait after a failure at monotonic time `now`; `rand` is a uniform draw from [0, 1)."""
        if self._last is None or now - self._last > self.reset_after:
            self._step = self.initial
        self._last = now
        delay = self._step
        self._step = min(self._step * self.factor, self.cap)
        return delay * (1 + self.jitter * rand) if self.jitter > 0 else delay
