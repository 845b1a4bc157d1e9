#!/usr/bin/env python3
"""Checks that the Grafana dashboard and docs/OPERATIONS.md name only metrics the edge
exports.

The exported names are read from the edge's source: the counters table, the
`connections` gauge and the `redis_rtt_seconds` histogram in edge/src/metrics.rs, and
the extra gauges that edge/src/http.rs passes to `metrics::render`. Every
`roomcast_edge_*` name in the dashboard's queries (and in OPERATIONS.md) must be one of
them; histogram series (`_bucket`, `_sum`, `_count`) only of a histogram. The dashboard
must also be well-formed: valid JSON, a `DS_PROMETHEUS` input that every panel and query
uses, unique panel ids.

    python3 docs/grafana/check_metrics.py [--metrics FILE]

With `--metrics FILE` (a saved `curl http://EDGE/metrics`), the names are also checked
against what a running edge actually exports. Exit status 0 when everything checks.
"""

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
METRICS_RS = ROOT / "edge/src/metrics.rs"
HTTP_RS = ROOT / "edge/src/http.rs"
DASHBOARD = ROOT / "docs/grafana/roomcast-edge.json"
OPERATIONS = ROOT / "docs/OPERATIONS.md"

NAME = re.compile(r"\broomcast_edge_[a-z0-9_]+")


def exported_from_source():
    """(plain series names, histogram family names) the edge exports, from its source."""
    metrics = METRICS_RS.read_text()
    prefix = re.search(r'const PREFIX: &str = "([a-z_]+)";', metrics).group(1)

    table = re.search(r"const COUNTERS: \[.*?\] = \[(.*?)\n\];", metrics, re.S).group(1)
    counters = re.findall(r'\(\s*"([a-z0-9_]+)",\s*"', table)
    declared = int(re.search(r"const COUNTERS: \[\(.*?\); (\d+)\]", metrics).group(1))
    if len(counters) != declared:
        sys.exit(f"parsed {len(counters)} counters, metrics.rs declares {declared}")

    gauges = re.findall(r'write_metric\(\s*out,\s*"([a-z0-9_]+)",\s*"gauge"', metrics)
    histograms = re.findall(r'render_histogram\(\s*out,\s*"([a-z0-9_]+)"', metrics)

    render_call = re.search(r"metrics::render\((.*?)&mut body", HTTP_RS.read_text(), re.S).group(1)
    extra = re.findall(r'\(\s*"([a-z0-9_]+)",\s*"', render_call)

    plain = {prefix + n + "_total" for n in counters}
    plain |= {prefix + n for n in gauges + extra}
    families = {prefix + n for n in histograms}
    if not counters or not gauges or not histograms or not extra:
        sys.exit("could not parse the metric definitions; update this script")
    return plain, families


def known(name, plain, families):
    if name in plain or name in families:
        return True
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in families:
            return True
    return False


def dashboard_problems(dash):
    problems = []
    inputs = [i.get("name") for i in dash.get("__inputs", [])]
    if "DS_PROMETHEUS" not in inputs:
        problems.append("no DS_PROMETHEUS input")
    ids = []
    for panel in dash.get("panels", []):
        ids.append(panel.get("id"))
        if "gridPos" not in panel:
            problems.append(f"panel {panel.get('title')!r} has no gridPos")
        if panel.get("type") == "row":
            continue
        if panel.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
            problems.append(f"panel {panel.get('title')!r} does not use ${{DS_PROMETHEUS}}")
        for t in panel.get("targets", []):
            if t.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
                problems.append(f"a query of {panel.get('title')!r} does not use ${{DS_PROMETHEUS}}")
            if not t.get("expr"):
                problems.append(f"a query of {panel.get('title')!r} has no expr")
    if len(ids) != len(set(ids)):
        problems.append("duplicate panel ids")
    return problems


def exprs(dash):
    out = []
    for panel in dash.get("panels", []):
        for t in panel.get("targets", []):
            out.append((panel.get("title"), t.get("expr", "")))
    for var in dash.get("templating", {}).get("list", []):
        out.append((f"variable {var.get('name')}", var.get("definition", "")))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metrics", help="a saved /metrics page of a running edge")
    args = parser.parse_args()

    plain, families = exported_from_source()
    print(f"exported by the edge (from source): {len(plain)} series names, "
          f"{len(families)} histogram(s): " + ", ".join(sorted(plain | families)))
    failures = []

    live = None
    if args.metrics:
        live = set()
        for line in Path(args.metrics).read_text().splitlines():
            if line and not line.startswith("#"):
                live.add(re.split(r"[{ ]", line, maxsplit=1)[0])
        expected = plain | {f + s for f in families for s in ("_bucket", "_sum", "_count")}
        if live != expected:
            failures.append(f"source and the live page differ: only in source "
                            f"{sorted(expected - live)}, only live {sorted(live - expected)}")

    text = DASHBOARD.read_text()
    try:
        dash = json.loads(text)
    except json.JSONDecodeError as e:
        sys.exit(f"{DASHBOARD}: not valid JSON: {e}")
    failures += [f"dashboard: {p}" for p in dashboard_problems(dash)]

    used = set()
    for title, expr in exprs(dash):
        for name in NAME.findall(expr):
            used.add(name)
            if not known(name, plain, families):
                failures.append(f"dashboard: {title!r} uses {name}, which the edge does not export")
            if live is not None and name not in live:
                failures.append(f"dashboard: {title!r} uses {name}, missing from {args.metrics}")
    print(f"dashboard: {len(exprs(dash))} queries, metric names used: " + ", ".join(sorted(used)))
    unused = {n for n in plain} - used
    unused |= {f for f in families if not any(u.startswith(f) for u in used)}
    if unused:
        print("  (not on the dashboard: " + ", ".join(sorted(unused)) + ")")

    doc_names = set(NAME.findall(OPERATIONS.read_text()))
    for name in sorted(doc_names):
        if not known(name, plain, families):
            failures.append(f"OPERATIONS.md names {name}, which the edge does not export")
    print(f"OPERATIONS.md: {len(doc_names)} roomcast_edge_* names")

    if failures:
        print("\nFAILED:")
        for f in failures:
            print("  " + f)
        return 1
    print("OK: every roomcast_edge_* name in the dashboard and OPERATIONS.md is exported by the edge")
    return 0


if __name__ == "__main__":
    sys.exit(main())
