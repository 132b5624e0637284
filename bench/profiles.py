"""Load profiles: how many virtual users (VUs) run at each moment, as k6's `stages` say.

A stage moves the VU count linearly from where the previous stage left it to its `target`
over its `duration`, in whole VUs, the way k6's `ramping-vus` executor does (which starts at
one VU). `bench/k6/booking.js` holds the same profiles for k6.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    duration: float
    """Seconds."""
    target: int
    """VUs at the end of the stage."""


@dataclass(frozen=True)
class Profile:
    name: str
    stages: tuple[Stage, ...]
    start_vus: int = 1
    think: bool = True
    """Whether VUs pause as the seed's users do (0.3 s between bookings, 1-3 s after)."""

    @property
    def duration(self) -> float:
        return sum(stage.duration for stage in self.stages)

    @property
    def max_vus(self) -> int:
        return max([self.start_vus, *(stage.target for stage in self.stages)])

    def steps(self) -> list[tuple[float, int]]:
        """`(seconds from start, VU count)` at every change of the count, in time order.

        Within a stage from `a` to `b` VUs, the count moves one VU at a time, reaching
        `a ± k` when the straight line from `a` to `b` does.
        """
        steps = [(0.0, self.start_vus)]
        start, vus = 0.0, self.start_vus
        for stage in self.stages:
            change = stage.target - vus
            if change and stage.duration <= 0:
                steps.append((start, stage.target))
            elif change:
                direction = 1 if change > 0 else -1
                for k in range(1, abs(change) + 1):
                    steps.append((start + stage.duration * k / abs(change), vus + direction * k))
            start += stage.duration
            vus = stage.target
        return steps

    def vus_at(self, seconds: float) -> int:
        """The VU count `seconds` after the start."""
        count = 0
        for offset, vus in self.steps():
            if offset > seconds:
                break
            count = vus
        return count


def _stages(*pairs: tuple[float, int]) -> tuple[Stage, ...]:
    return tuple(Stage(duration, target) for duration, target in pairs)


PROFILES: dict[str, Profile] = {
    # The seed's last script.
    "load": Profile(
        "load", _stages((30, 20), (60, 20), (30, 50), (60, 50), (30, 100), (60, 100), (30, 0))
    ),
    # The same shape up to the 500 VUs under which the old platform fell over.
    "stress": Profile(
        "stress", _stages((30, 100), (60, 100), (30, 300), (60, 300), (30, 500), (60, 500), (30, 0))
    ),
    "spike": Profile(
        "spike", _stages((10, 50), (30, 50), (10, 500), (60, 500), (10, 50), (30, 50), (10, 0))
    ),
    # A few seconds with 2 VUs: checks that everything answers, measures nothing.
    "smoke": Profile("smoke", _stages((3, 2)), start_vus=2),
}

CLOSED_VUS = 64


def closed(duration: float, vus: int = CLOSED_VUS) -> Profile:
    """`vus` VUs for `duration` seconds with no pauses: the throughput the system sustains."""
    return Profile("closed", _stages((duration, vus)), start_vus=vus, think=False)


def named(name: str, duration: float, vus: int = CLOSED_VUS) -> Profile:
    """The profile called `name`; `duration` and `vus` apply to `closed` only."""
    if name == "closed":
        return closed(duration, vus)
    return PROFILES[name]
