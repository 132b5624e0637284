"""Request samples and their summary in k6's terms.

Metric names, statistics and percentiles are k6's (`http_req_duration{operation:booking}`,
`p(95)`, `checks{check:booking_success}`, ...), so thresholds are written as in a k6 script
and the figures compare one to one with k6's end-of-test summary.
"""

from __future__ import annotations

import heapq
import math
import re
from array import array
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

Values = dict[str, float]

SLOWEST = 10
"""Slowest requests kept per operation, with their times, to find what made them slow."""


class Series:
    """The requests of one operation: the duration (ms) and status of each, and their span."""

    __slots__ = ("durations", "statuses", "starts", "first", "last")

    def __init__(self) -> None:
        self.durations = array("d")
        self.statuses = array("H")
        self.starts = array("d")
        self.first = math.inf
        self.last = -math.inf

    def add(self, started: float, ended: float, status: int) -> None:
        """One request, with `perf_counter()` times; status 0 means no response."""
        self.durations.append((ended - started) * 1000.0)
        self.statuses.append(status)
        self.starts.append(started)
        if started < self.first:
            self.first = started
        if ended > self.last:
            self.last = ended

    def __len__(self) -> int:
        return len(self.durations)


def failed(status: int) -> bool:
    """k6's `http_req_failed`: no response, or a status outside 200-399."""
    return not 200 <= status < 400


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """k6's percentile of sorted values: linear between the two nearest ranks."""
    if not ordered:
        return 0.0
    rank = fraction * (len(ordered) - 1)
    low = int(rank)
    if low >= len(ordered) - 1:
        return ordered[-1]
    return ordered[low] + (rank - low) * (ordered[low + 1] - ordered[low])


def trend(values: Iterable[float]) -> Values:
    """The statistics k6 shows for a duration, plus p(99)."""
    ordered = sorted(values)
    if not ordered:
        return {}
    stats = {"avg": sum(ordered) / len(ordered), "min": ordered[0], "med": percentile(ordered, 0.5)}
    for point in (90, 95, 99):
        stats[f"p({point})"] = percentile(ordered, point / 100)
    stats["max"] = ordered[-1]
    return stats


@dataclass(frozen=True)
class Check:
    """A k6 check on every response of one operation: `test(status, duration_ms)`."""

    operation: str
    test: Callable[[int, float], bool]


def summarize(series: Mapping[str, Series], checks: Mapping[str, Check]) -> dict[str, Values]:
    """k6 metrics from the samples: per operation `http_reqs`, `http_req_failed` and
    `http_req_duration`; per check `checks`. A `rate` of requests is per second of the span
    from the operation's first request to its last answer."""
    metrics: dict[str, Values] = {}
    for operation, samples in series.items():
        count = len(samples)
        if not count:
            continue
        failures = sum(1 for status in samples.statuses if failed(status))
        tag = f"{{operation:{operation}}}"
        span = samples.last - samples.first
        metrics["http_reqs" + tag] = {"count": count, "rate": count / span}
        metrics["http_req_failed" + tag] = _rate(failures, count)
        metrics["http_req_duration" + tag] = trend(samples.durations)
    for name, check in checks.items():
        samples = series.get(check.operation)
        if samples:
            passes = sum(map(check.test, samples.statuses, samples.durations))
            metrics[f"checks{{check:{name}}}"] = _rate(passes, len(samples))
    return metrics


def slowest(
    series: Mapping[str, Series], count: int = SLOWEST, clock_offset: float = 0.0
) -> dict[str, list[tuple[float, float]]]:
    """Per operation, its `count` slowest requests as `(start, ms)`, slowest first; `start`
    is the `perf_counter()` time plus `clock_offset` (`time.time() - time.perf_counter()`
    gives wall-clock times, to set beside the server's log or `vmstat -t`)."""
    found: dict[str, list[tuple[float, float]]] = {}
    for operation, samples in series.items():
        order = heapq.nlargest(count, range(len(samples)), key=samples.durations.__getitem__)
        found[operation] = [
            (samples.starts[index] + clock_offset, samples.durations[index]) for index in order
        ]
    return found


def _rate(passes: int, count: int) -> Values:
    """k6's Rate metric: the share of true values, with the counts."""
    return {"rate": passes / count, "passes": passes, "fails": count - passes}


@dataclass(frozen=True)
class Outcome:
    metric: str
    condition: str
    statistic: str
    value: float | None
    """None when the metric has no samples: that fails the threshold."""
    passed: bool


_CONDITION = re.compile(r"^\s*([a-z]+|p\(\d+(?:\.\d+)?\))\s*(<=|>=|<|>|==)\s*(-?[\d.]+)\s*$")

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b, "==": lambda a, b: a == b,
}


def evaluate(
    thresholds: Mapping[str, Sequence[str]], metrics: Mapping[str, Values]
) -> list[Outcome]:
    """Each threshold, written as in k6 (`{"http_req_failed{...}": ["rate<0.05"]}`), checked."""
    outcomes = []
    for metric, conditions in thresholds.items():
        for condition in conditions:
            match = _CONDITION.match(condition)
            if match is None:
                raise ValueError(f"threshold {metric}: cannot read {condition!r}")
            statistic, operator, limit = match.groups()
            value = metrics.get(metric, {}).get(statistic.replace("p(50)", "med"))
            passed = value is not None and _COMPARE[operator](value, float(limit))
            outcomes.append(Outcome(metric, condition, statistic, value, passed))
    return outcomes


@dataclass(frozen=True)
class Summary:
    """The end of a test: what ran, the metrics, and the thresholds checked against them."""

    profile: str
    seconds: float
    max_vus: int
    iterations: int
    operations: Sequence[str]
    metrics: Mapping[str, Values]
    outcomes: Sequence[Outcome]
    slowest: Mapping[str, Sequence[tuple[float, float]]] = field(default_factory=dict)
    """Per operation, its slowest requests as (wall-clock start, ms): see `slowest()`."""

    @property
    def passed(self) -> bool:
        return all(outcome.passed for outcome in self.outcomes)

    def as_json(self) -> dict:
        return {
            "profile": self.profile, "seconds": self.seconds, "max_vus": self.max_vus,
            "iterations": self.iterations, "metrics": dict(self.metrics),
            "thresholds": [asdict(outcome) for outcome in self.outcomes], "passed": self.passed,
            "slowest": {name: [list(pair) for pair in pairs]
                        for name, pairs in self.slowest.items()},
        }


_COLUMNS = {
    "avg": "avg", "p50": "med", "p90": "p(90)", "p95": "p(95)", "p99": "p(99)", "max": "max",
}


def render(summary: Summary) -> str:
    """The summary as a table, in the words of k6's end-of-test summary."""
    lines = [
        f"profile {summary.profile}: {summary.seconds:.1f} s, up to {summary.max_vus} VUs, "
        f"{summary.iterations} iterations",
        "",
        f"{'operation':<10}{'requests':>9}{'failed':>9}{'rate/s':>9}"
        + "".join(f"{label:>9}" for label in _COLUMNS) + "  (ms)",
    ]
    for operation in summary.operations:
        tag = f"{{operation:{operation}}}"
        if "http_reqs" + tag not in summary.metrics:
            continue
        reqs = summary.metrics["http_reqs" + tag]
        duration = summary.metrics["http_req_duration" + tag]
        failed_share = summary.metrics["http_req_failed" + tag]["rate"]
        lines.append(
            f"{operation:<10}{reqs['count']:>9.0f}{failed_share:>9.2%}{reqs['rate']:>9.1f}"
            + "".join(f"{duration[name]:>9.2f}" for name in _COLUMNS.values())
        )
    checks = {
        name: values for name, values in summary.metrics.items() if name.startswith("checks{")
    }
    if checks:
        lines += ["", "checks"]
        for name, values in checks.items():
            total = values["passes"] + values["fails"]
            lines.append(f"  {name[len('checks{check:'):-1]:<22}{values['rate']:>8.2%}"
                         f"  {values['passes']:.0f} / {total:.0f}")
    lines += ["", "thresholds"]
    for outcome in summary.outcomes:
        shown = "no data" if outcome.value is None else f"{outcome.statistic}={outcome.value:.4g}"
        verdict = "pass" if outcome.passed else "FAIL"
        lines.append(f"  {verdict}  {outcome.metric} {outcome.condition}  {shown}")
    return "\n".join(lines)
