"""Prometheus text metrics, kept in plain dicts (a few dict updates per request, none per event).

Each Granian worker is its own process with its own counters; scrape each worker, or run one worker
per port, to see them all.
"""

from __future__ import annotations

import time
from collections import defaultdict

# Seconds; shared by the time-to-first-event and stream-duration histograms.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _Histogram:
    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = defaultdict(lambda: [0] * (len(_BUCKETS) + 1))
        self.sums: dict[str, float] = defaultdict(float)

    def observe(self, label: str, value: float) -> None:
        counts = self.counts[label]
        for i, bound in enumerate(_BUCKETS):
            if value <= bound:
                counts[i] += 1
                break
        else:
            counts[-1] += 1
        self.sums[label] += value

    def render(self, name: str, label_name: str, lines: list[str]) -> None:
        for label, counts in sorted(self.counts.items()):
            total = 0
            for bound, count in zip((*_BUCKETS, "+Inf"), counts, strict=True):
                total += count
                lines.append(f'{name}_bucket{{{label_name}="{label}",le="{bound}"}} {total}')
            lines.append(f'{name}_sum{{{label_name}="{label}"}} {self.sums[label]:.6f}')
            lines.append(f'{name}_count{{{label_name}="{label}"}} {total}')


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, int, bool], int] = defaultdict(int)
        self.upstream_errors: dict[tuple[str, str], int] = defaultdict(int)
        self.retries: dict[tuple[str, str, str], int] = defaultdict(int)
        self.in_flight = 0
        self.first_event = _Histogram()
        self.duration = _Histogram()

    def request(self, provider: str, status: int, stream: bool) -> None:
        self.requests[(provider, status, stream)] += 1

    def upstream_error(self, provider: str, code: str) -> None:
        self.upstream_errors[(provider, code)] += 1

    def retry(self, target: str, following: str, code: str) -> None:
        """An attempt at `target` failed with `code` before its first content; the request went on to `following`
        (the same target: a retry; another: a failover)."""
        self.retries[(target, following, code)] += 1

    def stream_done(self, provider: str, began: float, first_event_at: float | None) -> None:
        now = time.monotonic()
        self.duration.observe(provider, now - began)
        if first_event_at is not None:
            self.first_event.observe(provider, first_event_at - began)

    def render(self) -> str:
        lines = [
            "# HELP ferroute_requests_total POST /v1/responses requests by provider, HTTP status and streaming.",
            "# TYPE ferroute_requests_total counter",
        ]
        for (provider, status, stream), count in sorted(self.requests.items()):
            labels = f'provider="{provider}",status="{status}",stream="{str(stream).lower()}"'
            lines.append(f"ferroute_requests_total{{{labels}}} {count}")
        lines += [
            "# HELP ferroute_upstream_errors_total Upstream failures by provider and code.",
            "# TYPE ferroute_upstream_errors_total counter",
        ]
        for (provider, code), count in sorted(self.upstream_errors.items()):
            lines.append(f'ferroute_upstream_errors_total{{provider="{provider}",code="{code}"}} {count}')
        lines += [
            "# HELP ferroute_upstream_retries_total Attempts that failed before their first content and were retried "
            "(next_target the same) or failed over (another), by code.",
            "# TYPE ferroute_upstream_retries_total counter",
        ]
        for (target, following, code), count in sorted(self.retries.items()):
            labels = f'target="{label_value(target)}",next_target="{label_value(following)}",code="{code}"'
            lines.append(f"ferroute_upstream_retries_total{{{labels}}} {count}")
        lines += [
            "# HELP ferroute_streams_in_flight Streaming responses being sent now.",
            "# TYPE ferroute_streams_in_flight gauge",
            f"ferroute_streams_in_flight {self.in_flight}",
            "# HELP ferroute_time_to_first_event_seconds From the request to the first byte of the stream.",
            "# TYPE ferroute_time_to_first_event_seconds histogram",
        ]
        self.first_event.render("ferroute_time_to_first_event_seconds", "provider", lines)
        lines += [
            "# HELP ferroute_stream_duration_seconds From the request to the end of the stream.",
            "# TYPE ferroute_stream_duration_seconds histogram",
        ]
        self.duration.render("ferroute_stream_duration_seconds", "provider", lines)
        return "\n".join(lines) + "\n"


def label_value(value: str) -> str:
    """A Prometheus label value, escaped (a model name is the client's text)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
