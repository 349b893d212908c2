"""asv tracking of every row of the peer comparison (benchmarks/compare.py), as ratios.

``setup_cache`` runs one comparison (a reduced plan, best of 3 rounds with the
peer order rotated) against a redis-server of its own; each ``track_*`` returns
one row's ratio, so a regression shows in ``asv compare``. Ratios are measured
side by side in one run, so they move less with the machine than raw times do.
"""

from __future__ import annotations

import asyncio
import sys
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import compare  # noqa: E402
from benchmarks.compare_report import ATC  # noqa: E402
from tests.servers import RedisServer  # noqa: E402

# The table's shape (3,000 concurrent distinct keys, a Zipf(1.1) workload with a 10 ms
# loader) at a size that keeps a quick asv run within seconds.
PLAN = compare.Plan(
    seq_ops=300,
    l1_ops=3000,
    trials=3,
    concurrent=3000,
    concurrent_rounds=3,
    zipf_requests=4000,
    zipf_keys=1000,
    zipf_concurrency=200,
    zipf_runs=1,
)


def measure_rows(plan: compare.Plan = PLAN) -> dict[str, Any]:
    """Run the comparison once; return each row's ratio and aiotoolcache's own value."""
    server = RedisServer().start()
    try:
        with warnings.catch_warnings():
            # aiocache 0.12 calls redis-py methods redis-py deprecates (setex, close).
            warnings.simplefilter("ignore", DeprecationWarning)
            rows, _ = asyncio.run(compare.run(plan, server))
    finally:
        server.stop()
    return {row.key: {"ratio": row.ratio(), "ours": row.values.get(ATC)} for row in rows}


class CompareSuite:
    """CompareSuite tracks aiotoolcache against its peers, one asv benchmark per table row."""

    timeout = 600.0

    def setup_cache(self) -> dict[str, Any]:
        return measure_rows()

    def track_l1_hit_vs_cashews_client_side(self, rows: dict[str, Any]) -> float:
        """L1 hit µs ÷ cashews client_side's (target ≤ 0.3)."""
        return float(rows["l1_hit"]["ratio"])

    track_l1_hit_vs_cashews_client_side.unit = "ratio"  # type: ignore[attr-defined]

    def track_l2_hit_vs_raw_redis(self, rows: dict[str, Any]) -> float:
        """Sequential L2 hit µs ÷ raw redis-py GET + msgpack (target ≤ 1.10)."""
        return float(rows["l2_hit"]["ratio"])

    track_l2_hit_vs_raw_redis.unit = "ratio"  # type: ignore[attr-defined]

    def track_concurrent_3000_vs_best_peer(self, rows: dict[str, Any]) -> float:
        """3,000 concurrent L2 hits, ops/s ÷ the best of raw, cashews, aiocache (target ≥ 8)."""
        return float(rows["concurrent_l2_hits"]["ratio"])

    track_concurrent_3000_vs_best_peer.unit = "ratio"  # type: ignore[attr-defined]

    def track_zipf_wall_vs_best_peer(self, rows: dict[str, Any]) -> float:
        """Zipf workload wall time ÷ the best peer's (target ≤ 0.5)."""
        return float(rows["zipf_wall"]["ratio"])

    track_zipf_wall_vs_best_peer.unit = "ratio"  # type: ignore[attr-defined]

    def track_zipf_loader_calls_per_distinct_key(self, rows: dict[str, Any]) -> float:
        """Zipf workload loader calls ÷ distinct keys (target = 1)."""
        return float(rows["zipf_loads"]["ratio"])

    track_zipf_loader_calls_per_distinct_key.unit = "ratio"  # type: ignore[attr-defined]

    def track_zipf_redis_commands_vs_cashews(self, rows: dict[str, Any]) -> float:
        """Zipf workload Redis commands (scripts' inner ones included) ÷ cashews' (≤ 0.8)."""
        return float(rows["zipf_commands"]["ratio"])

    track_zipf_redis_commands_vs_cashews.unit = "ratio"  # type: ignore[attr-defined]
