"""The PNG of benchmarks/scaling.py: CPU time and Redis commands per operation, per dimension."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks.scaling import Step


def plot(steps: list[Step], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dimensions = list(dict.fromkeys(s.dimension for s in steps))
    fig, axes = plt.subplots(2, len(dimensions), figsize=(4 * len(dimensions), 6.5))
    for col, dimension in enumerate(dimensions):
        series = [s for s in steps if s.dimension == dimension]
        xs = [s.x for s in series]
        top, bottom = axes[0][col], axes[1][col]
        top.plot(xs, [s.client_us for s in series], "o-", label="client CPU")
        top.plot(xs, [s.harness_us for s in series], ":", label="callers' own CPU")
        top.plot(xs, [s.server_us for s in series], "s-", label="Redis CPU")
        bottom.plot(xs, [s.cmds for s in series], "^-", color="tab:green")
        for s in series:
            for text in s.flags:
                y = s.server_us if text.startswith("Redis") else s.client_us
                top.plot([s.x], [y], "o", ms=14, mfc="none", mec="red", mew=2)
            if s.backend_errors:
                bottom.annotate(
                    f"{s.backend_errors:,} backend errors\n(fail-open)",
                    (s.x, s.cmds),
                    textcoords="offset points",
                    xytext=(-90, 10),
                    fontsize=8,
                    color="red",
                )
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.grid(True, which="both", alpha=0.3)
        top.set_yscale("log")
        top.set_title(dimension)
        top.set_ylabel("µs per operation")
        bottom.set_ylabel("Redis commands per operation")
        bottom.set_xlabel("bytes" if dimension == "value size" else "callers or keys")
        bottom.set_ylim(bottom=0)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, frameon=False)
    fig.suptitle(
        "aiotoolcache: per-operation cost as the work grows (one spawned Redis; "
        "red circles: flagged steps)"
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
