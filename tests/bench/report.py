"""The benchmark's outputs: the printed table, the target checks, JSON, a PNG chart, Markdown."""

from __future__ import annotations

import json
import shutil
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = [
    "checks",
    "markdown",
    "one_line",
    "profile_summary",
    "profile_text",
    "table",
    "write_all",
]

# The speed targets, checked on every run. (c) is the grpc.aio floor, (c2) the
# floor of the server authz runs on (grpc.server, 4 threads).
RPS_WARM_MIN = 1.00  # (d) >= 1.0 x (c) requests/s
RPS_WARM_SYNC_MIN = 0.55  # (d) >= 0.55 x (c2) requests/s
C1_LATENCY_MAX = 1.20  # (d) latency at concurrency 1 <= 1.2 x (c2)'s
RPS_COLD_MIN = 0.80  # (e) >= 0.8 x (c) requests/s
CPU_WARM_MAX_US = 330.0  # (d) service CPU per request
DPOP_CPU_MAX = 1.5  # (f) service CPU per request <= 1.5 x (d)'s: DPoP <= 1.5x bearer
PEAK_RSS_MAX_MIB = 100.0  # per worker
RSS_GROWTH_MAX_MIB = 2.0  # "no growth" over the measured run (target: a 60-second run)


def _ms(microseconds: float | None, digits: int = 2) -> str:
    return "-" if microseconds is None else f"{microseconds / 1000:.{digits}f}"


def _get(result: dict[str, Any], *path: str) -> Any:
    value: Any = result
    for name in path:
        if not isinstance(value, dict) or name not in value:
            return None
        value = value[name]
    return value


def one_line(result: dict[str, Any]) -> str:
    if "c16" not in result:
        return f"FAILED: {'; '.join(result['problems'])}"
    rps = result["c16"]["requests_per_s"]
    text = (
        f"{rps:,.0f} req/s, p50 {_ms(result['c16']['latency_us']['p50'])} ms, "
        f"p99 {_ms(result['c16']['latency_us']['p99'])} ms, "
        f"c1 p50 {_ms(result['c1']['latency_us']['p50'], 3)} ms"
    )
    if not result["ok"]:
        text += f"  ERRORS: {'; '.join(result['problems'])}"
    for warning in result["warnings"]:
        text += f"\n    warning: {warning}"
    return text


def checks(results: list[dict[str, Any]], seconds: float) -> list[dict[str, Any]]:
    """The targets (and the comparisons with (b) and (d)), each PASS, FAIL, INVALID or N/A."""
    by_key = {result["key"]: result for result in results}

    def ratio(
        name: str,
        pair: tuple[str, str],
        path: tuple[str, ...],
        target: str,
        limit: float | None,
    ) -> dict[str, Any]:
        top, bottom = pair
        check: dict[str, Any] = {"name": name, "target": target, "value": None}
        if top not in by_key or bottom not in by_key:
            return {**check, "status": "N/A", "detail": f"({top}) or ({bottom}) not run"}
        broken = [key for key in (top, bottom) if not by_key[key]["ok"]]
        if broken:
            detail = f"errors in {', '.join(f'({key})' for key in broken)}"
            return {**check, "status": "INVALID", "detail": detail}
        numerator, denominator = _get(by_key[top], *path), _get(by_key[bottom], *path)
        if not numerator or not denominator:
            return {**check, "status": "N/A", "detail": "no figure"}
        value = numerator / denominator
        check["value"] = round(value, 3)
        if limit is None:
            return {**check, "status": "info", "detail": ""}
        higher_is_better = target.startswith(">=")
        passed = value >= limit if higher_is_better else value <= limit
        return {**check, "status": "PASS" if passed else "FAIL", "detail": ""}

    rps = ("c16", "requests_per_s")
    c1_p50 = ("c1", "latency_us", "p50")
    cpu = ("service_process", "cpu_us_per_request")
    found = [
        ratio("(d)/(c) requests/s", ("d", "c"), rps, f">= {RPS_WARM_MIN}", RPS_WARM_MIN),
        ratio(
            "(d)/(c2) requests/s", ("d", "c2"), rps, f">= {RPS_WARM_SYNC_MIN}", RPS_WARM_SYNC_MIN
        ),
        ratio(
            "(d)/(c2) latency at concurrency 1 (p50)",
            ("d", "c2"),
            c1_p50,
            f"<= {C1_LATENCY_MAX}",
            C1_LATENCY_MAX,
        ),
        ratio("(e)/(c) requests/s", ("e", "c"), rps, f">= {RPS_COLD_MIN}", RPS_COLD_MIN),
        _cpu_check(by_key.get("d")),
        ratio("(d)/(b) requests/s", ("d", "b"), rps, "(compare)", None),
        ratio("(e)/(b) requests/s", ("e", "b"), rps, "(compare)", None),
        ratio("(f)/(d) requests/s", ("f", "d"), rps, "(compare)", None),
        ratio(
            "(f)/(d) service CPU per request (DPoP vs bearer)",
            ("f", "d"),
            cpu,
            f"<= {DPOP_CPU_MAX}",
            DPOP_CPU_MAX,
        ),
    ]
    # (f)'s replay store holds every accepted proof for its iat window: its
    # memory grows during a run by design, bounded by the window; only the peak counts.
    for key, growth_checked in (("d", True), ("e", True), ("f", False)):
        result = by_key.get(key)
        usage = _get(result, "service_process") if result else None
        peak = {"name": f"({key}) authz peak RSS, MiB", "target": f"<= {PEAK_RSS_MAX_MIB:.0f}"}
        growth = {
            "name": f"({key}) authz RSS growth over the measured run, MiB",
            "target": f"<= {RSS_GROWTH_MAX_MIB:.0f}",
        }
        if result is None or usage is None:
            why = "not run" if result is None else "no figure"
            found.append({**peak, "value": None, "status": "N/A", "detail": why})
            if growth_checked:
                found.append({**growth, "value": None, "status": "N/A", "detail": why})
            continue
        valid = "" if result["ok"] else "INVALID"
        found.append(
            {
                **peak,
                "value": usage["peak_rss_mib"],
                "status": valid
                or ("PASS" if usage["peak_rss_mib"] <= PEAK_RSS_MAX_MIB else "FAIL"),
                "detail": "",
            }
        )
        soak = result.get("soak")
        if soak:
            found.append(_soak_check(soak, valid))
            continue
        if not growth_checked:
            continue
        found.append(
            {
                **growth,
                "value": usage["rss_growth_mib"],
                "status": valid
                or ("PASS" if usage["rss_growth_mib"] <= RSS_GROWTH_MAX_MIB else "FAIL"),
                "detail": "" if seconds >= 60 else f"{seconds:.0f} s run; the target is 60 s",
            }
        )
    return found


def _cpu_check(result: dict[str, Any] | None) -> dict[str, Any]:
    check: dict[str, Any] = {
        "name": "(d) authz service CPU per request, µs",
        "target": f"<= {CPU_WARM_MAX_US:.0f}",
        "value": None,
    }
    usage = _get(result, "service_process") if result else None
    if result is None or usage is None:
        return {**check, "status": "N/A", "detail": "not run" if result is None else "no figure"}
    value = usage["cpu_us_per_request"]
    passed = value <= CPU_WARM_MAX_US
    status = "INVALID" if not result["ok"] else ("PASS" if passed else "FAIL")
    return {**check, "value": value, "status": status, "detail": ""}


def _soak_check(soak: dict[str, Any], valid: str) -> dict[str, Any]:
    """RSS over the cold soak: flat once the token cache is full."""
    check = {
        "name": f"(e) authz RSS growth, {soak['seconds']:.0f} s more cold, token cache full, MiB",
        "target": f"<= {RSS_GROWTH_MAX_MIB:.0f}",
        "value": soak["rss_growth_mib"],
    }
    if not soak["cache_full"]:
        detail = f"{soak['tokens_before']} tokens before it, cache holds {soak['cache_entries']}"
        return {**check, "status": "N/A", "detail": detail}
    passed = soak["rss_growth_mib"] <= RSS_GROWTH_MAX_MIB
    detail = (
        f"{soak['requests']} requests; RSS {soak['rss_start_mib']} -> {soak['rss_end_mib']} "
        f"MiB, max {soak['rss_max_mib']}"
    )
    if soak["seconds"] < 60:
        detail += "; the target is 60 s"
    return {**check, "status": valid or ("PASS" if passed else "FAIL"), "detail": detail}


_SPEED = (
    ("variant", "<"),
    ("req/s", ">"),
    ("p50 ms", ">"),
    ("p99 ms", ">"),
    ("c1 p50 ms", ">"),
    ("c1 p99 ms", ">"),
    ("Check p50/p99 µs", ">"),
    ("c1 Check p50 µs", ">"),
    ("errors", ">"),
)
_COST = (
    ("variant", "<"),
    ("svc CPU s", ">"),
    ("svc CPU µs/req", ">"),
    ("svc cores", ">"),
    ("svc peak RSS MiB", ">"),
    ("svc RSS growth MiB", ">"),
    ("Envoy CPU µs/req", ">"),
    ("other load c16/c1, cores", ">"),
)


def _label(result: dict[str, Any]) -> str:
    return f"({result['key']}) {result['name']}"


def _speed_rows(document: dict[str, Any]) -> list[list[str]]:
    rows = []
    for result in document["variants"]:
        if "c16" not in result:
            rows.append([_label(result), *(["-"] * (len(_SPEED) - 2)), "DID NOT RUN"])
            continue
        main, c1 = result["c16"], result["c1"]
        check = result["envoy_authz_us"]["c16"]
        check_c1 = result["envoy_authz_us"]["c1"]
        failures = main["failures"] + c1["failures"] + result["warmup"]["failures"]
        rows.append(
            [
                _label(result),
                f"{main['requests_per_s']:,.0f}",
                _ms(main["latency_us"]["p50"]),
                _ms(main["latency_us"]["p99"]),
                _ms(c1["latency_us"]["p50"], 3),
                _ms(c1["latency_us"]["p99"], 3),
                f"{check['p50']:.0f} / {check['p99']:.0f}" if check else "-",
                f"{check_c1['p50']:.0f}" if check_c1 else "-",
                "0" if result["ok"] else f"{failures} FAILED",
            ]
        )
    return rows


def _cost_rows(document: dict[str, Any]) -> list[list[str]]:
    rows = []
    for result in document["variants"]:
        if "c16" not in result:
            rows.append([_label(result), *(["-"] * (len(_COST) - 1))])
            continue
        service = result["service_process"] or {}
        envoy = result["envoy_process"] or {}
        rows.append(
            [
                _label(result),
                f"{service['cpu_seconds']:.1f}" if service else "-",
                f"{service['cpu_us_per_request']:.0f}" if service else "-",
                f"{service['cpu_cores']:.2f}" if service else "-",
                f"{service['peak_rss_mib']:.1f}" if service else "-",
                f"{service['rss_growth_mib']:+.1f}" if service else "-",
                f"{envoy['cpu_us_per_request']:.0f}" if envoy else "-",
                f"{result['machine_cpu']['c16']['other_cores']:.2f} / "
                f"{result['machine_cpu']['c1']['other_cores']:.2f}",
            ]
        )
    return rows


def _check_rows(document: dict[str, Any]) -> list[list[str]]:
    rows = []
    for check in document["checks"]:
        value = "-" if check["value"] is None else f"{check['value']:g}"
        status = check["status"] + (f" ({check['detail']})" if check["detail"] else "")
        rows.append([check["name"], value, check["target"], status])
    return rows


def _aligned(header: list[str], rows: list[list[str]], aligns: list[str]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for index, row in enumerate([header, *rows]):
        cells = [
            f"{cell:{align}{width}}" for cell, align, width in zip(row, aligns, widths, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _header_lines(document: dict[str, Any]) -> list[str]:
    machine, settings = document["machine"], document["settings"]
    return [
        f"{document['generated_at']}  authz {machine['authz_commit']}",
        f"machine: {machine['cpu_model']}, {machine['cpus']} "
        f"{'virtual ' if machine.get('virtual_machine') else ''}CPUs, {machine['memory_mib']} MiB, "
        f"{machine['kernel']}; Python {machine['python']}, Envoy {machine['envoy']}, "
        f"{machine['wrk']}",
        f"load: wrk {settings['connections']} connections / {settings['threads']} threads for "
        f"{settings['seconds']:g} s after a {settings['warmup_seconds']:g} s warm-up; "
        f"concurrency 1: {settings['c1_seconds']:g} s; Envoy --concurrency "
        f"{settings['envoy_concurrency']}",
        f"pinning: {settings['pinning']}",
        *(
            [f"profiled with py-spy ({settings['profiled']}): figures include its overhead"]
            if settings.get("profiled")
            else []
        ),
        f"load average: {machine['loadavg_start']} (start), "
        f"{machine.get('loadavg_end', '?')} (end)",
    ]


def _columns(columns: tuple[tuple[str, str], ...]) -> tuple[list[str], list[str]]:
    return [name for name, _ in columns], [align for _, align in columns]


def table(document: dict[str, Any]) -> str:
    speed_header, speed_aligns = _columns(_SPEED)
    cost_header, cost_aligns = _columns(_COST)
    parts = [
        *_header_lines(document),
        "",
        _aligned(speed_header, _speed_rows(document), speed_aligns),
        "",
        _aligned(cost_header, _cost_rows(document), cost_aligns),
        "",
        _aligned(
            ["check", "value", "target", "result"], _check_rows(document), ["<", ">", "<", "<"]
        ),
    ]
    proofs = _proof_lines(document)
    if proofs:
        parts += ["", *proofs]
    warnings = [
        f"({result['key']}) {text}"
        for result in document["variants"]
        for text in [*result["problems"], *result["warnings"]]
    ]
    if warnings:
        parts += ["", *warnings]
    return "\n".join(parts)


def _proof_lines(document: dict[str, Any]) -> list[str]:
    """How many DPoP proofs each run had and used, and how long they took to mint
    (before the run). wrk builds one request to check it, so one is used unsent."""
    lines = []
    for result in document["variants"]:
        proofs = result.get("proofs")
        if not proofs:
            continue
        runs = ", ".join(
            f"{label} {run['minted']:,} minted in {run['mint_seconds']:.1f} s, "
            f"{run.get('used', 0):,} used"
            for label, run in zip(("warm-up", "c16", "c1"), proofs["runs"], strict=False)
        )
        lines.append(
            f"({result['key']}) proofs ({proofs['margin']:g}x the expected rate): {runs}; "
            f"{proofs['mint_seconds']:.1f} s of minting in all"
        )
    return lines


def _markdown_table(header: list[str], rows: list[list[str]], aligns: list[str]) -> str:
    rule = ["---:" if align == ">" else "---" for align in aligns]
    lines = ["| " + " | ".join(row) + " |" for row in [header, rule, *rows]]
    return "\n".join(lines)


def markdown(document: dict[str, Any]) -> str:
    proofs = [f"- {line}" for line in _proof_lines(document)]
    speed_header, speed_aligns = _columns(_SPEED)
    cost_header, cost_aligns = _columns(_COST)
    lines = [
        "# Benchmark",
        "",
        "Written by `make bench` (tests/bench/run.py); do not edit by hand.",
        "",
        *[f"- {line}" for line in _header_lines(document)],
        "",
        _markdown_table(speed_header, _speed_rows(document), speed_aligns),
        "",
        _markdown_table(cost_header, _cost_rows(document), cost_aligns),
        "",
        "req/s, p50 and p99: wrk with 16 connections; c1: one connection. Check: Envoy's own "
        "measure of the ext_authz call (`emit_filter_state_stats`, `latency_us`). svc: the "
        "ext_authz service process (CPU and RSS growth over the 16-connection run, peak RSS "
        "over the whole variant). After (e), a cold soak goes on with distinct tokens "
        "(`BENCH_SOAK_SECONDS`, 60) once the token cache is full, and its RSS growth is the "
        "flat-memory check. (f) is (d) with a DPoP-bound token (`cnf.jkt`) on a route "
        "that takes only DPoP (`sender_constraint: dpop`): every request carries a fresh "
        "ES256 proof, each sent once (a proof sent again is refused by the replay store and "
        "would count as an error), minted before the run (the client's cost is not the "
        "service's); (f)/(d) service CPU per request is the DPoP cost. other load: CPU "
        "used on the machine by processes outside the benchmark during the 16-connection "
        "and the one-connection runs. Every variant answers from an Envoy "
        "`direct_response`.",
        "",
        *([*proofs, ""] if proofs else []),
        _markdown_table(
            ["check", "value", "target", "result"], _check_rows(document), ["<", ">", "<", "<"]
        ),
        "",
        "![requests/s and latency per variant](bench.png)",
        "",
    ]
    notes = [
        f"({result['key']}) {text}"
        for result in document["variants"]
        for text in [*result["problems"], *result["warnings"]]
    ]
    if notes:
        lines += ["Notes:", "", *[f"- {note}" for note in notes], ""]
    return "\n".join(lines)


def chart(document: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [result for result in document["variants"] if "c16" in result]
    labels = [textwrap.fill(f"({r['key']}) {r['name']}", 24) for r in results]
    colors = ["#4c72b0" if r["ok"] else "#bbbbbb" for r in results]
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5), layout="constrained")

    rps = [r["c16"]["requests_per_s"] for r in results]
    bars = left.bar(range(len(results)), rps, color=colors)
    for bar, value, result in zip(bars, rps, results, strict=True):
        text = f"{value:,.0f}" + ("" if result["ok"] else "\nERRORS")
        left.annotate(
            text,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    left.set_xticks(range(len(results)), labels, fontsize=7)
    left.set_ylabel("requests/s (16 connections)")
    left.set_title("Throughput")

    width = 0.27
    series = [
        ("p50, 16 conn.", [r["c16"]["latency_us"]["p50"] / 1000 for r in results], "#55a868"),
        ("p99, 16 conn.", [r["c16"]["latency_us"]["p99"] / 1000 for r in results], "#c44e52"),
        ("p50, 1 conn.", [r["c1"]["latency_us"]["p50"] / 1000 for r in results], "#8172b2"),
    ]
    for offset, (name, values, color) in enumerate(series):
        positions = [index + (offset - 1) * width for index in range(len(results))]
        right.bar(positions, values, width, label=name, color=color)
    right.set_xticks(range(len(results)), labels, fontsize=7)
    right.set_ylabel("latency, ms")
    right.set_title("Latency")
    right.legend(fontsize=8)

    machine = document["machine"]
    figure.suptitle(
        f"authz benchmark, {document['generated_at'][:10]}: {machine['cpu_model']}, "
        f"{machine['cpus']} CPUs, Envoy {machine['envoy']} (--concurrency 1), wrk",
        fontsize=10,
    )
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_all(document: dict[str, Any], out: Path, docs: Path | None) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "png": out / "bench.png", "md": out / "bench.md"}
    paths["json"].write_text(json.dumps(document, indent=2) + "\n")
    chart(document, paths["png"])
    paths["md"].write_text(markdown(document))
    if docs is not None:
        docs.mkdir(parents=True, exist_ok=True)
        paths["docs_png"] = docs / "bench.png"
        paths["docs_md"] = docs / "bench.md"
        shutil.copyfile(paths["png"], paths["docs_png"])
        shutil.copyfile(paths["md"], paths["docs_md"])
    return paths


def profile_summary(raw: str, top: int = 20) -> dict[str, Any]:
    """py-spy's raw (collapsed) stacks -> the hottest functions, by own and total samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(frame) for frame in stack.split(";") if frame]
        frames = [frame for frame in frames if not frame.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [
            [frame, round(100 * count / samples, 1)] for frame, count in counter.most_common(top)
        ]

    return {"samples": samples, "own_percent": share(own), "total_percent": share(total)}


def _frame(frame: str) -> str:
    """'decide (authz/check/decision.py:63)' -> 'decide (authz/check/decision.py)':
    one entry per function."""
    name, _, where = frame.partition(" (")
    location = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3"):
        if marker in location:
            location = location.split(marker, 1)[1]
    if "/authz/" in location:
        location = "authz/" + location.rsplit("/authz/", 1)[1]
    return f"{name} ({location})" if location else name


def profile_text(summary: dict[str, Any]) -> str:
    lines = [f"{summary['samples']} samples", "", "own time (the function itself):"]
    lines += [f"  {percent:5.1f}%  {frame}" for frame, percent in summary["own_percent"]]
    lines += ["", "total time (the function and what it calls):"]
    lines += [f"  {percent:5.1f}%  {frame}" for frame, percent in summary["total_percent"]]
    return "\n".join(lines) + "\n"
