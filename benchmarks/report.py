#!/usr/bin/env python3
"""Charts of the benchmark results, and the published tables regenerated from results JSON.

    benchmarks/report.py publish results/ECHO.json [results/X-frameworks.json ...]

`publish` makes no new runs. From committed result files (compare.py's echo JSON, and
optionally frameworks.py's, idle_memory.py's and fanout.py's) it redraws the chart next
to each file (ECHO.svg and ECHO.png, ...) and rewrites the generated parts of README.md
and docs/source/benchmarks.rst (between the "bench:begin" / "bench:end" markers): the
ratio table and the chart.

The benchmark scripts call the chart functions themselves at the end of every run;
they need matplotlib (`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any

import goals as goals_mod
from forms import REFERENCE

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
README = os.path.join(REPO, "README.md")
DOCS = os.path.join(REPO, "docs", "source", "benchmarks.rst")
COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "svg.hashsalt": "trio_uring", "axes.spines.top": False,
                         "axes.spines.right": False})
    return plt


def _save(fig: Any, base: str) -> str:
    """base.svg and base.png; returns the SVG's path. SVG metadata without a date, so a
    redraw of the same data gives the same file."""
    fig.savefig(base + ".svg", metadata={"Date": None})
    fig.savefig(base + ".png", dpi=110)
    return base + ".svg"


def bars(ax: Any, groups: list[str], series: dict[str, list[float | None]],
         ranges: dict[str, list[tuple[float, float] | None]] | None = None,
         goals: dict[str, list[float | None]] | None = None, baseline: float | None = None,
         label_fmt: str = "{:.2f}") -> None:
    """Grouped bars: one group per scenario, one bar per series; whiskers = the range of
    the per-repetition values, a black tick = the goal, a dashed line = the baseline."""
    n = len(series)
    width = 0.8 / max(n, 1)
    for i, (name, vals) in enumerate(series.items()):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        hs = [v if v is not None else 0.0 for v in vals]
        ax.bar(xs, hs, width * 0.92, label=name, color=COLORS[i % len(COLORS)])
        rs = list((ranges or {}).get(name, [])) + [None] * len(xs)
        for x, v, r in zip(xs, vals, rs, strict=False):
            if r is not None:
                ax.plot([x, x], r, color="black", linewidth=0.8)
            if v is not None:  # above the bar and its whisker
                ax.annotate(label_fmt.format(v), (x, max(v, r[1]) if r else v), textcoords="offset points",
                            xytext=(0, 2), ha="center", fontsize=6.5)
        for x, g in zip(xs, (goals or {}).get(name, []), strict=False):
            if g is not None:
                ax.plot([x - width * 0.46, x + width * 0.46], [g, g], color="black", linewidth=2)
    if baseline is not None:
        ax.axhline(baseline, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=30, ha="right", rotation_mode="anchor", fontsize=8)


def _log_axis(ax: Any) -> None:
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def echo_chart(report: dict[str, Any], base: str) -> str:
    """compare.py's report: ratio to stock Trio per scenario and form (with the goals),
    and server CPU per request (per connection, per MB) on a log scale."""
    plt = _plt()
    table = report["table"]
    forms = [f for f in report["servers"] if f != REFERENCE]
    groups = [r["scenario"] for r in table]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.6), constrained_layout=True)
    ratios = {f: [r["forms"][f].get("rate_ratio") for r in table] for f in forms}
    ranges = {f: [(min(p), max(p)) if (p := r["forms"][f].get("rate_paired")) else None for r in table]
              for f in forms}
    goal_marks = {f: [(g.threshold if (g := goals_mod.goal("echo", r["scenario"], f, "ratio")) else None)
                      for r in table] for f in forms}
    bars(ax1, groups, ratios, ranges, goal_marks, baseline=1.0)
    ax1.set_ylabel("rate / stock Trio (same run)")
    ax1.set_title("Throughput ratio to stock Trio (epoll); black tick = goal")
    ax1.legend(loc="upper left", fontsize=8)
    cpu = {f: [r["forms"][f].get("cpu") for r in table] for f in report["servers"]}
    bars(ax2, [f"{r['scenario']}\n({r['cpu_unit']})" for r in table], cpu, label_fmt="{:.3g}")
    _log_axis(ax2)
    ax2.set_ylabel("server CPU per request (µs, log scale)")
    ax2.set_title("Server CPU per request (lower is better)")
    ax2.legend(loc="upper left", fontsize=8)
    m = report["meta"]
    fig.suptitle(f"trio_uring vs stock Trio, echo server: {m.get('reps')} interleaved repetitions of "
                 f"{m.get('duration_s')} s, {m.get('started', '')}", fontsize=9)
    path = _save(fig, base)
    plt.close(fig)
    return path


def ratio_chart(title: str, ylabel: str, groups: list[str], series: dict[str, list[float | None]], base: str,
                ranges: dict[str, list[tuple[float, float] | None]] | None = None,
                goals: dict[str, list[float | None]] | None = None, baseline: float | None = 1.0,
                log: bool = False) -> str:
    """One panel of grouped bars (frameworks.py, idle_memory.py, fanout.py)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(groups) * max(1, len(series)) / 2 + 2), 3.8),
                           constrained_layout=True)
    bars(ax, groups, series, ranges, goals, baseline, label_fmt="{:.3g}")
    if log:
        _log_axis(ax)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    path = _save(fig, base)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- publish

def echo_markdown_table(report: dict[str, Any]) -> list[str]:
    forms = [f for f in report["servers"] if f != REFERENCE]
    out = ["| scenario | stock Trio | " + " | ".join(forms) + " |", "|---|---|" + "---|" * len(forms)]
    for row in report["table"]:
        ref = row["forms"][REFERENCE]
        cells = [row["scenario"], f"{ref['rate']:,.0f} {row['unit']}" if ref.get("rate") else "-"]
        for f in forms:
            e = row["forms"][f]
            g = goals_mod.goal("echo", row["scenario"], f, "ratio")
            r = e.get("rate_ratio")
            cell = "-" if r is None else f"{r:.2f}"
            if g and r is not None:
                cell += f" (goal {g.text()}: {goals_mod.verdict(g.met(r))})"
            cells.append(cell)
        out.append("| " + " | ".join(cells) + " |")
    return out


def other_markdown_rows(report: dict[str, Any]) -> list[str]:
    """One line per extra benchmark: its headline ratios, as the benchmark reports them."""
    return [f"* {line}" for line in report.get("summary_lines", [])]


def _replace_between(path: str, block: str, begin: str, end: str) -> None:
    """Replace what lies between the lines `begin` and `end` of a file with block."""
    with open(path) as f:
        text = f.read()
    pat = re.compile("^" + re.escape(begin) + "$.*?^" + re.escape(end) + "$", re.S | re.M)
    if not pat.search(text):
        sys.exit(f"report: no '{begin}' ... '{end}' lines in {os.path.relpath(path, REPO)}")
    with open(path, "w") as f:
        f.write(pat.sub(lambda _: f"{begin}\n\n{block.strip()}\n\n{end}", text))


def publish(paths: list[str]) -> None:
    reports = []
    for p in paths:
        with open(p) as f:
            reports.append((p, json.load(f)))
    echo = next(((p, r) for p, r in reports if r.get("benchmark") == "echo"), None)
    if echo is None:
        sys.exit("report: publish needs one of compare.py's result JSONs")
    echo_path, echo_report = echo
    base = os.path.splitext(echo_path)[0]
    chart = echo_chart(echo_report, base)
    for p, r in reports:
        if r is not echo_report and r.get("chart_data"):
            draw_saved(r["chart_data"], os.path.splitext(p)[0])
    rel_readme = os.path.relpath(chart, REPO)
    m = echo_report["meta"]
    commit = echo_report["probe"].get("commit")
    intro = (f"Ratio to stock Trio on epoll in the same interleaved run: {m.get('reps')} repetitions of "
             f"{m.get('duration_s')} s per scenario and form, {m.get('started', '')[:10]}"
             f"{', commit ' + commit if commit else ''} (`{os.path.relpath(echo_path, REPO)}`; goals from "
             "`benchmarks/goals.py`):")
    extra = [line for _, r in reports if r is not echo_report for line in other_markdown_rows(r)]
    md = [intro, "", *echo_markdown_table(echo_report), ""]
    if extra:
        md += [*extra, ""]
    md += [f"![ratios and CPU per request]({rel_readme})"]
    _replace_between(README, "\n".join(md), "<!-- bench:begin -->", "<!-- bench:end -->")
    # the same in reStructuredText for the docs
    rel_docs = os.path.relpath(chart, os.path.dirname(DOCS))
    rst = [intro.replace("`", "``"), "", ".. list-table::", "   :header-rows: 1", ""]
    for i, line in enumerate(echo_markdown_table(echo_report)):
        if i == 1:
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        rst.append("   * - " + cells[0])
        rst += [f"     - {c}" for c in cells[1:]]
    rst.append("")
    rst += [re.sub(r"`([^`]+)`", r"``\1``", x) for x in extra]
    if extra:
        rst.append("")
    rst += [f".. image:: {rel_docs}", "   :alt: ratios to stock Trio and server CPU per request", ""]
    _replace_between(DOCS, "\n".join(rst), ".. bench:begin", ".. bench:end")
    print(f"report: {os.path.relpath(chart, REPO)} (and .png), README.md and "
          f"{os.path.relpath(DOCS, REPO)} regenerated from {', '.join(paths)}")


def draw_saved(chart_data: dict[str, Any], base: str) -> str:
    """Redraw a chart another benchmark stored as data (its ratio_chart arguments)."""
    d = dict(chart_data)
    ranges = {k: [tuple(x) if x else None for x in v] for k, v in (d.pop("ranges", None) or {}).items()}
    return ratio_chart(base=base, ranges=ranges or None, **d)  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("publish", help="redraw the charts and rewrite the README/docs tables from result JSONs")
    p.add_argument("results", nargs="+", help="compare.py's JSON first or anywhere, then others")
    a = ap.parse_args()
    if a.cmd == "publish":
        publish(a.results)


if __name__ == "__main__":
    main()
