"""Load-testing tools: a fast mock upstream, a load generator and their reports.

The servers and clients are Rust (`ferroute._core.MockUpstream`, `ferroute._core.LoadGenerator`,
running on their own threads without the GIL); this package holds the command-line logic and the
reports (table, JSON, PNG via matplotlib when installed, self-contained HTML).
"""

from ferroute._core import LoadGenerator, MockUpstream

__all__ = ["LoadGenerator", "MockUpstream"]
