"""What the bench shows: the tables (:func:`print_report`) and the chart (:func:`plot`)."""

from __future__ import annotations

from typing import Any, TextIO

from guarddb import MODES

from .harness import installed
from .references import REFERENCES
from .workloads import WORKLOADS, Sizes, Workload, describe_workload, target

# -- the report -------------------------------------------------------------------------------


#: A control (plain/plain) median further than this from 1 means a noisy machine.
NOISE_MARGIN = 0.03


def noise_warning(report: dict[str, Any]) -> str | None:
    """A warning when the control shows the machine was too noisy to hold the targets to."""
    worst = max(report["control"].items(), key=lambda item: abs(item[1]["median"] - 1))
    key, stats = worst
    if abs(stats["median"] - 1) <= NOISE_MARGIN:
        return None
    return (
        f"NOISY: plain/plain on {key} came out at {stats['median']:.3f}x (should be 1): "
        f"something else ran on this machine (load average "
        f"{report['environment']['load_average']:.2f} at the start, "
        f"{report.get('load_average_end', float('nan')):.2f} at the end); ratios within "
        f"that of 1 mean nothing. Run the bench again on a quiet machine."
    )


def _ratio(value: float) -> str:
    return f"{value:.3f}x"


def _spread(stats: dict[str, Any]) -> str:
    return f"{stats['q1']:.3f}-{stats['q3']:.3f}"


def _per_op(workload: Workload, seconds: float) -> str:
    value = seconds * workload.scale
    digits = 0 if value >= 100 else 1 if value >= 10 else 2
    return f"{value:.{digits}f} {workload.unit}"


def _table(rows: list[list[str]], out: TextIO) -> None:
    """A markdown table with aligned columns (readable as it is, pasteable into the README)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    print(line(rows[0]), file=out)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|", file=out)
    for row in rows[1:]:
        print(line(row), file=out)


#: Each workload's short name (the chart's), for the report's sentences.
_SHORT = {w.key: w.short for w in WORKLOADS}


def rounds_phrase(report: dict[str, Any]) -> str:
    """``15 interleaved rounds (45 for the round trip, ...)``: the rounds of each workload."""
    asked = report["rounds"]
    more: dict[int, list[str]] = {}
    for key, workload in report["workloads"].items():
        rounds = workload.get("rounds", asked)
        if rounds != asked:
            more.setdefault(rounds, []).append(_SHORT.get(key, key))
    extra = "; ".join(
        f"{rounds} for {' and '.join(names)}"
        for rounds, names in sorted(more.items(), reverse=True)
    )
    return f"{asked} interleaved rounds" + (f" ({extra})" if extra else "")


def print_report(report: dict[str, Any], out: TextIO) -> None:
    """The tables: guarddb per mode, mutex under contention, the reference drivers."""
    sizes = Sizes(**report["sizes"])
    env = report["environment"]
    print(
        f"guarddb {env['guarddb']} vs plain mysqlclient {env['mysqlclient']}: median ratio "
        f"guarded/plain of {rounds_phrase(report)} (IQR: the middle half of the rounds)",
        file=out,
    )
    print(
        f"server: {env['server']} over {env['transport']}; Python {env['python']}; "
        f"{env['cpus']} CPUs; {env['machine']}; load average {env['load_average']:.2f} at "
        f"the start; {env['pinning']}",
        file=out,
    )
    if report["quick"]:
        print(
            "--quick: small sizes and few rounds, to prove the bench works; not a measurement",
            file=out,
        )
    print(file=out)

    rows = [["workload", "mode", "plain mysqlclient", "guarded/plain", "IQR", "target", ""]]
    for workload in WORKLOADS:
        control = report["control"][workload.key]
        rows.append(
            [
                describe_workload(workload, sizes),
                "control: plain/plain",
                _per_op(workload, control["base_per_op"]),
                _ratio(control["median"]),
                _spread(control),
                "1",
                "",
            ]
        )
        for mode in MODES:
            rows.append(_mode_row("", mode, workload, report["modes"][mode][workload.key]))
    _table(rows, out)

    c = report["contention"]
    print(file=out)
    _table(
        [
            [
                f"{c['threads']} threads share one connection, round trips",
                "calls/s",
                "guarddb/plain",
                "IQR",
                "target",
                "",
            ],
            [
                "guarddb, guard='mutex'",
                f"{c['guarddb_calls_per_s']:,.0f}",
                _ratio(c["median"]),
                _spread(c),
                f"≥ {c['target']:.2f}x",
                "met" if c["met"] else "MISSED",
            ],
            [
                "plain mysqlclient, every call in one threading.Lock",
                f"{c['plain_lock_calls_per_s']:,.0f}",
                "1",
                "",
                "",
                "",
            ],
        ],
        out,
    )

    print(file=out)
    _pymysql_table(report.get("pymysql"), sizes, out)

    print(file=out)
    _cooperative_table(report.get("cooperative"), out)

    print(file=out)
    references = report["reference"]
    available = [key for key in REFERENCES if references[key]["available"]]
    header = ["reference: driver/plain mysqlclient", "plain mysqlclient"]
    for key in available:
        entry = references[key]
        header.append(f"{entry['label']} {entry['version']} ({entry['implementation']})")
    if available:
        rows = [header]
        for workload in WORKLOADS:
            row = [describe_workload(workload, sizes), ""]
            for key in available:
                stats = references[key]["workloads"].get(workload.key, {})
                if "median" in stats:
                    row[1] = row[1] or _per_op(workload, stats["base_per_op"])
                    row.append(f"{_ratio(stats['median'])} ({_spread(stats)})")
                else:
                    row.append(stats.get("error", "not run"))
            rows.append(row)
        _table(rows, out)
    for key in REFERENCES:
        entry = references[key]
        if entry["note"]:
            print(f"{entry['label']}: {entry['note']}", file=out)
    if not available:
        print("reference drivers: none installed (pip install 'guarddb[bench]')", file=out)

    missed = [
        f"{mode}/{key}"
        for mode in MODES
        for key, stats in report["modes"][mode].items()
        if stats["met"] is False
    ]
    if not c["met"]:
        missed.append("mutex contended")
    total = len(MODES) * len(WORKLOADS) + 1
    pymysql_modes = (report.get("pymysql") or {}).get("modes") or {}
    for mode, per_mode in pymysql_modes.items():
        total += sum(stats["met"] is not None for stats in per_mode.values())
        missed += [
            f"pymysql {mode}/{key}" for key, stats in per_mode.items() if stats["met"] is False
        ]
    print(file=out)
    if missed:
        print(
            f"targets met: {total - len(missed)} of {total}; missed: {', '.join(missed)}", file=out
        )
    else:
        print(f"targets met: all {total}", file=out)
    warning = None if report["quick"] else noise_warning(report)
    if warning:
        print(warning, file=out)
    print(f"(bench ran in {report['elapsed_s']:.0f}s)", file=out)


def _pymysql_table(entry: dict[str, Any] | None, sizes: Sizes, out: TextIO) -> None:
    """guarddb.pymysql in every mode against plain PyMySQL, or why it did not run."""
    if entry is None:  # a report from before the table existed
        return
    if not entry["available"] or not entry["modes"]:
        print(f"guarddb.pymysql against plain PyMySQL: {entry['note'] or 'not run'}", file=out)
        return
    print(
        f"guarddb.pymysql vs plain PyMySQL {entry['version']}, interleaved the same way:",
        file=out,
    )
    rows = [["workload", "mode", "plain PyMySQL", "guarded/plain", "IQR", "target", ""]]
    for workload in WORKLOADS:
        for number, mode in enumerate(MODES):
            first = describe_workload(workload, sizes) if number == 0 else ""
            rows.append(_mode_row(first, mode, workload, entry["modes"][mode][workload.key]))
    _table(rows, out)


def _mode_row(first: str, mode: str, workload: Workload, stats: dict[str, Any]) -> list[str]:
    """A guarded mode's row of a workload: plain's time per op, the ratio, its spread, target."""
    return [
        first,
        mode if mode != "mutex" else "mutex (uncontended)",
        _per_op(workload, stats["base_per_op"]),
        _ratio(stats["median"]),
        _spread(stats),
        _target(stats),
        _verdict(stats),
    ]


def _target(stats: dict[str, Any]) -> str:
    return "none" if stats["target"] is None else f"≤ {stats['target']:.2f}x"


def _verdict(stats: dict[str, Any]) -> str:
    return {True: "met", False: "MISSED", None: ""}[stats["met"]]


def _cooperative_table(entry: dict[str, Any] | None, out: TextIO) -> None:
    """The cooperative round trip under gevent (a patched child), or why it did not run."""
    if entry is None:  # a report from before the row existed
        return
    workload = next(w for w in WORKLOADS if w.key == "roundtrip")
    if not entry["available"] or "median" not in entry:
        print(f"{entry['title']}: {entry['note'] or 'not run'}", file=out)
        return
    _table(
        [
            [
                f"under gevent (monkey-patched child, gevent {entry['gevent']}), one greenlet",
                "plain mysqlclient",
                "guarded/plain",
                "IQR",
            ],
            [
                entry["title"],
                _per_op(workload, entry["base_per_op"]),
                _ratio(entry["median"]),
                _spread(entry),
            ],
        ],
        out,
    )


# -- the chart --------------------------------------------------------------------------------

MATPLOTLIB_MISSING = (
    "--plot needs matplotlib, which is not installed: pip install 'guarddb[bench]' "
    "(or pip install matplotlib)"
)


def have_matplotlib() -> bool:
    """True if matplotlib can be imported."""
    return installed("matplotlib")


def _workload_labels(sizes: Sizes) -> list[str]:
    labels = []
    for w in WORKLOADS:
        if w.key == "roundtrip":
            size = "SELECT 1"
        elif w.key == "executemany":
            size = f"{sizes.many:,} rows"
        else:
            size = f"{sizes.rows:,} rows"
        labels.append(f"{w.short}\n{size}")
    return labels


def plot(report: dict[str, Any], path: str) -> None:
    """A PNG bar chart of the ratios: guarddb per mode, contention, the reference drivers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    sizes = Sizes(**report["sizes"])
    labels = _workload_labels(sizes)
    env = report["environment"]
    references = report["reference"]
    available = [k for k in REFERENCES if references[k]["available"] and references[k]["workloads"]]
    pymysql_modes = (report.get("pymysql") or {}).get("modes") or {}
    panels = 1 + bool(pymysql_modes) + bool(available)
    fig, axes = plt.subplots(
        panels,
        2,
        figsize=(14, 5 * panels),
        gridspec_kw={"width_ratios": [5, 1]},
        squeeze=False,
    )
    fig.suptitle(
        f"guarddb {env['guarddb']} vs plain mysqlclient {env['mysqlclient']}: "
        f"{env['server']}, {env['transport']}, Python {env['python']}, {env['cpus']} CPUs, "
        f"median of {rounds_phrase(report)}{' (--quick)' if report['quick'] else ''}"
        f"\n{env['pinning']}"
    )
    times = FuncFormatter(lambda value, _pos: f"{value:g}x")
    x = range(len(WORKLOADS))

    series = [("control: plain/plain", report["control"], "0.75")] + [
        (mode, report["modes"][mode], f"C{i}") for i, mode in enumerate(MODES)
    ]
    _mode_panel(axes[0][0], series, "mysqlclient", labels, times)
    axes[0][0].set_title("guarddb in each guard mode (black ticks: the targets; lower is better)")
    row = 1
    if pymysql_modes:
        series = [(mode, pymysql_modes[mode], f"C{i}") for i, mode in enumerate(MODES)]
        _mode_panel(axes[row][0], series, "pymysql", labels, times)
        axes[row][0].set_ylabel("time guarded / plain PyMySQL (bars: IQR)")
        axes[row][0].set_title(
            f"guarddb.pymysql in each guard mode against plain PyMySQL "
            f"{report['pymysql']['version']} (black ticks: the targets)"
        )
        axes[row][1].axis("off")
        row += 1

    c = report["contention"]
    ax = axes[0][1]
    ax.bar([0, 1], [c["guarddb_calls_per_s"], c["plain_lock_calls_per_s"]], color=["C2", "C7"])
    ax.set_xticks([0, 1])
    ax.set_xticklabels(["guarddb\nmutex", "plain +\nLock"], fontsize=8)
    ax.set_ylabel("round trips/s (higher is better)")
    ax.set_title(f"{c['threads']} threads share one\nconnection: {c['median']:.2f}x", fontsize=9)

    if available:
        ax = axes[row][0]
        width = 0.8 / len(available)
        for i, key in enumerate(available):
            entry = references[key]
            medians = [entry["workloads"].get(w.key, {}).get("median", 0.0) for w in WORKLOADS]
            positions = [p - 0.4 + width * (i + 0.5) for p in x]
            ax.bar(
                positions,
                medians,
                width,
                label=f"{entry['label']} {entry['version']} ({entry['implementation']})",
                color=f"C{4 + i}",
            )
            for pos, median in zip(positions, medians):
                if median:
                    ax.annotate(
                        f"{median:.2f}",
                        (pos, median),
                        xytext=(0, 2),
                        textcoords="offset points",
                        ha="center",
                        va="bottom",
                        fontsize=7,
                    )
        ax.axhline(1.0, color="gray", lw=0.8, ls="--")
        ax.set_yscale("log")
        shown = [
            entry["workloads"].get(w.key, {}).get("median", 1.0)
            for entry in (references[k] for k in available)
            for w in WORKLOADS
        ]
        ticks = [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
        ax.set_yticks([t for t in ticks if min(shown) / 2 <= t <= max(shown) * 2])
        ax.yaxis.set_major_formatter(times)
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(list(x))
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_ylabel("time driver / plain mysqlclient (log)")
        ax.set_title("for reference: other drivers against plain mysqlclient")
        ax.legend(fontsize=8)
        axes[row][1].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _mode_panel(
    ax: Any,
    series: list[tuple[str, dict[str, Any], str]],
    driver: str,
    labels: list[str],
    times: Any,
) -> None:
    """Bars of guarded/plain per workload, one series per mode (and the control), with targets."""
    x = range(len(WORKLOADS))
    width = 0.8 / len(series)
    for i, (name, results, color) in enumerate(series):
        stats = [results[w.key] for w in WORKLOADS]
        medians = [s["median"] for s in stats]
        errors = [
            [s["median"] - s["q1"] for s in stats],
            [s["q3"] - s["median"] for s in stats],
        ]
        positions = [p - 0.4 + width * (i + 0.5) for p in x]
        ax.bar(positions, medians, width, yerr=errors, capsize=2, label=name, color=color)
        for pos, w, median in zip(positions, WORKLOADS, medians):
            limit = target(name, w.key, driver) if name in MODES else None
            if limit is not None:
                ax.hlines(limit, pos - width / 2, pos + width / 2, colors="black", lw=1.2)
            ax.annotate(
                f"{median:.2f}",
                (pos, median),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=6,
            )
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, fontsize=8)
    ax.yaxis.set_major_formatter(times)
    ax.set_ylabel("time guarded / plain (bars: IQR)")
    ax.legend(fontsize=8)
    low = min(results[w.key]["q1"] for _, results, _ in series for w in WORKLOADS)
    ax.set_ylim(min(0.9, low - 0.05), None)
