"""The demo's timeline picture: throughput per flow through r1 and r2, with the
VRRP state changes, the failure and the ctsync commit marked.  Needs matplotlib
(the ``demo`` extra); :func:`available` says whether it is installed."""

from __future__ import annotations

from pathlib import Path

from .flowstats import FLOW_CLASSES

_COLORS = {"tcp": "tab:blue", "sip": "tab:orange", "icmp": "tab:green"}
_LABELS = {"tcp": "TCP (port 9000)", "sip": "UDP SIP (5060)", "icmp": "ICMP"}
_STATE_COLORS = {"master": "tab:red", "backup": "tab:gray", "fault": "black", "init": "tab:purple"}


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_step(path: str | Path, title: str, t0: float, bin_s: float,
              series: dict[str, dict[str, list[float]]], events: list[dict],
              marks: list[tuple[float, str]], commits: list[dict]) -> Path:
    """Write the PNG.  ``series``: router -> flow class -> bytes/s per bin from
    ``t0``; ``events``: vrrpd transitions (``time``, ``router``, ``instance``,
    ``new``); ``marks``: (time, label) of the actions (failure, repair);
    ``commits``: ctsync commits (``router``, ``time`` = end, ``duration``)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    routers = list(series)
    fig, axes = plt.subplots(len(routers), 1, figsize=(11, 3.2 * len(routers)), sharex=True,
                             squeeze=False)
    for ax, router in zip(axes[:, 0], routers):
        data = series[router]
        n = max((len(v) for v in data.values()), default=0)
        xs = [i * bin_s for i in range(n)]
        for c in FLOW_CLASSES:
            if c in data:
                ax.plot(xs, [b * 8 / 1000 for b in data[c]], color=_COLORS[c], label=_LABELS[c],
                        linewidth=1.2, drawstyle="steps-post")
        ax.set_ylabel(f"through {router}\nkbit/s")
        ax.grid(True, alpha=0.3)
        top = ax.get_ylim()[1] or 1.0
        for t, label in marks:
            ax.axvline(t - t0, color="black", linestyle="--", linewidth=1)
            ax.text(t - t0, top * 0.97, f" {label}", fontsize=8, va="top")
        for ev in events:
            if ev.get("router") != router or ev.get("instance") != "LAN":
                continue
            st = str(ev.get("new", "")).lower()
            x = ev["time"] - t0
            ax.axvline(x, color=_STATE_COLORS.get(st, "tab:purple"), linewidth=1, alpha=0.8)
            ax.text(x, top * 0.80, f" {st.upper()}", fontsize=7, rotation=90, va="top",
                    color=_STATE_COLORS.get(st, "tab:purple"))
        for cm in commits:
            if cm.get("router") != router or not cm.get("time"):
                continue
            end = cm["time"] - t0
            start = end - (cm.get("duration") or 0.0)
            ax.axvspan(start, max(end, start + bin_s / 4), color="gold", alpha=0.6)
            ax.text(end, top * 0.55, f" commit {cm.get('committed', cm.get('count', 0))} "
                    f"in {1000 * (cm.get('duration') or 0):.0f} ms", fontsize=7)
        ax.legend(loc="lower right", fontsize=7)
    axes[-1, 0].set_xlabel("seconds since the step started (lines: LAN state changes; dashed: actions)")
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
