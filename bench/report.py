"""Helpers and the report of bench/run.sh (stdlib only).

    report.py render TEMPLATE OUT KEY=VALUE...   # fill @@KEY@@ placeholders
    report.py free-ports N                       # N distinct free loopback TCP ports
    report.py cpu GROUP...                       # per group (PIDs joined by ","): CPU ticks
                                                 # used so far by those PIDs' process trees
    report.py tree PID...                        # the PIDs and all their descendants
    report.py check-echo --user-id N --admin B   # stdin: request head seen by the upstream
    report.py summarize WORKDIR OUT_JSON         # parse the wrk runs, print the table, write JSON

CPU time is utime+stime (+cutime+cstime, so that children reaped during a run still count)
from /proc/<pid>/stat, summed over each process and all of its descendants: an nginx master
and its worker, haproxy, the gateway and any worker process it forks.
"""

from __future__ import annotations

import json
import os
import re
import socket
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TARGETS = ("direct", "nginx", "haproxy", "gateway")
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Targets of issue #3 for one gateway worker on one core.
TARGET_RATIO_HAPROXY = 0.35
TARGET_CPU_US = 80.0
TARGET_P99_MS = 5.0


# --------------------------------------------------------------------------- processes


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime+stime+cutime+cstime) of one process, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: split after the last ")".
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); ppid is field 4, utime..cstime are fields 14..17.
    ppid = int(fields[1])
    ticks = sum(int(value) for value in fields[11:15])
    return ppid, ticks


def _all_processes() -> dict[int, tuple[int, int]]:
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None:
                table[int(entry)] = stat
    return table


def process_tree(
    roots: list[int], table: dict[int, tuple[int, int]] | None = None
) -> tuple[set[int], dict[int, tuple[int, int]]]:
    """The roots (those still alive) and every descendant, with the /proc snapshot used."""
    if table is None:
        table = _all_processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    stack = [pid for pid in roots if pid in table]
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, []))
    return found, table


def cpu_ticks(groups: list[list[int]]) -> list[int]:
    """Per group: clock ticks of CPU used so far by its roots and all their descendants."""
    table = _all_processes()  # one snapshot for every group
    totals = []
    for roots in groups:
        pids, _ = process_tree(roots, table)
        totals.append(sum(table[pid][1] for pid in pids))
    return totals


# --------------------------------------------------------------------------- wrk


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


@dataclass
class WrkResult:
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    non_2xx_3xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return self.non_2xx_3xx + sum(self.socket_errors.values())


def parse_wrk(text: str) -> WrkResult:
    """Parse ``wrk --latency`` output."""
    result = WrkResult()
    match = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    if match:
        result.requests = int(match.group(1))
        result.seconds = _ms(match.group(2) + match.group(3)) / 1000.0
    match = re.search(r"Requests/sec:\s*([\d.]+)", text)
    if match:
        result.rps = float(match.group(1))
    match = re.search(r"Latency\s+([\d.]+\w+)\s+([\d.]+\w+)\s+([\d.]+\w+)", text)
    if match:
        result.latency_ms["avg"] = _ms(match.group(1))
        result.latency_ms["stdev"] = _ms(match.group(2))
        result.latency_ms["max"] = _ms(match.group(3))
    for pct, value in re.findall(r"^\s*(50|75|90|99)%\s+([\d.]+\w+)\s*$", text, re.MULTILINE):
        result.latency_ms[f"p{pct}"] = _ms(value)
    match = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    if match:
        result.non_2xx_3xx = int(match.group(1))
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if match:
        result.socket_errors = dict(
            zip(("connect", "read", "write", "timeout"), map(int, match.groups()), strict=True)
        )
    return result


# --------------------------------------------------------------------------- summary


def _read_tsv(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split("\t") for line in path.read_text().splitlines() if line.strip()]


def _read_env(path: Path) -> dict[str, str]:
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                out[key.strip()] = value.strip()
    return out


def _ticks_us(before: str, after: str) -> float | None:
    if before in ("", "-") or after in ("", "-"):
        return None
    return (int(after) - int(before)) * 1_000_000 / CLK_TCK


def load_runs(workdir: Path) -> list[dict[str, Any]]:
    """One record per wrk run listed in ``runs.tsv``."""
    runs = []
    for row in _read_tsv(workdir / "runs.tsv"):
        round_no, target, wrk_file, p_before, p_after, u_before, u_after, wall_ns = row
        wrk_path = Path(wrk_file)
        text = wrk_path.read_text(errors="replace") if wrk_path.exists() else ""
        wrk = parse_wrk(text)
        wall = int(wall_ns) / 1e9
        proxy_us = _ticks_us(p_before, p_after)
        upstream_us = _ticks_us(u_before, u_after)
        record: dict[str, Any] = {
            "round": int(round_no),
            "target": target,
            **asdict(wrk),
            "errors": wrk.errors,
            "wall_seconds": round(wall, 3),
            "proxy_cpu_seconds": None if proxy_us is None else proxy_us / 1e6,
            "upstream_cpu_seconds": None if upstream_us is None else upstream_us / 1e6,
            "proxy_cpu_us_per_req": None,
            "proxy_cpu_percent": None,
            "upstream_cpu_us_per_req": None,
            "valid": wrk.requests > 0 and wrk.errors <= 0.01 * wrk.requests,
        }
        if not text.strip():
            record["wrk_output"] = "(missing)"
        elif wrk.requests == 0:
            record["wrk_output"] = text[-500:]
        if wrk.requests > 0:
            if proxy_us is not None:
                record["proxy_cpu_us_per_req"] = proxy_us / wrk.requests
                record["proxy_cpu_percent"] = 100 * proxy_us / 1e6 / wall if wall else None
            if upstream_us is not None:
                record["upstream_cpu_us_per_req"] = upstream_us / wrk.requests
        runs.append(record)
    return runs


def _median(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Median over the rounds of every target (valid runs only)."""
    summary: dict[str, dict[str, Any]] = {}
    for target in TARGETS:
        mine = [run for run in runs if run["target"] == target]
        valid = [run for run in mine if run["valid"]]
        summary[target] = {
            "runs": len(mine),
            "valid_runs": len(valid),
            "errors": sum(run["errors"] for run in mine),
            "rps": _median([run["rps"] for run in valid]),
            "p50_ms": _median([run["latency_ms"].get("p50") for run in valid]),
            "p99_ms": _median([run["latency_ms"].get("p99") for run in valid]),
            "proxy_cpu_us_per_req": _median([run["proxy_cpu_us_per_req"] for run in valid]),
            "proxy_cpu_percent": _median([run["proxy_cpu_percent"] for run in valid]),
            "upstream_cpu_us_per_req": _median([run["upstream_cpu_us_per_req"] for run in valid]),
        }
    return summary


def ratios(runs: list[dict[str, Any]], summary: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """gateway/haproxy and gateway/nginx req/s: of the medians, and round by round."""
    out: dict[str, Any] = {}
    gateway = summary["gateway"]["rps"]
    for peer in ("haproxy", "nginx"):
        other = summary[peer]["rps"]
        key = f"gateway/{peer}"
        out[key] = round(gateway / other, 3) if gateway and other else None
        per_round = []
        for round_no in sorted({run["round"] for run in runs}):
            mine = {
                run["target"]: run["rps"]
                for run in runs
                if run["round"] == round_no and run["valid"]
            }
            if mine.get("gateway") and mine.get(peer):
                per_round.append(round(mine["gateway"] / mine[peer], 3))
        out[f"{key} per round"] = per_round
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(
    summary: dict[str, dict[str, Any]],
    ratio: dict[str, Any],
    status: dict[str, str],
    meta: dict[str, str],
) -> None:
    print()
    print(
        f"Median of {meta.get('rounds', '?')} round(s), wrk -t{meta.get('threads', '?')} "
        f"-c{meta.get('connections', '?')} -d{meta.get('duration', '?')} "
        f"(proxy + upstream on CPU {meta.get('proxy_cpu', '?')}, "
        f"wrk on CPU {meta.get('wrk_cpu', '?')})"
    )
    header = (
        f"{'target':<9}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'proxy µs/req':>14}{'proxy CPU%':>12}{'upstr µs/req':>14}{'errors':>8}"
    )
    print(header)
    print("-" * len(header))
    for target in TARGETS:
        row = summary[target]
        state = status.get(target, "ok")
        if row["valid_runs"] == 0:
            reason = state if state != "ok" else f"no valid run ({row['errors']} errors)"
            print(f"{target:<9}  n/a — {reason}")
            continue
        print(
            f"{target:<9}{_fmt(row['rps'], ',.0f'):>10}{_fmt(row['p50_ms'], '.2f'):>9}"
            f"{_fmt(row['p99_ms'], '.2f'):>9}{_fmt(row['proxy_cpu_us_per_req'], '.1f'):>14}"
            f"{_fmt(row['proxy_cpu_percent'], '.0f'):>12}"
            f"{_fmt(row['upstream_cpu_us_per_req'], '.1f'):>14}{row['errors']:>8}"
        )
    print()
    for key in ("gateway/haproxy", "gateway/nginx"):
        per_round = ", ".join(f"{value:.3f}" for value in ratio[f"{key} per round"])
        print(
            f"{key + ' req/s:':<24}{_fmt(ratio[key], '.3f'):>7}"
            + (f"   (per round: {per_round})" if per_round else "")
        )
    gateway = summary["gateway"]
    if gateway["valid_runs"]:
        checks = [
            (
                f"≥ {TARGET_RATIO_HAPROXY}x haproxy req/s",
                ratio["gateway/haproxy"],
                ratio["gateway/haproxy"] is not None
                and ratio["gateway/haproxy"] >= TARGET_RATIO_HAPROXY,
            ),
            (
                f"≤ {TARGET_CPU_US:.0f} µs CPU/request",
                gateway["proxy_cpu_us_per_req"],
                gateway["proxy_cpu_us_per_req"] is not None
                and gateway["proxy_cpu_us_per_req"] <= TARGET_CPU_US,
            ),
            (
                f"p99 ≤ {TARGET_P99_MS:.0f} ms",
                gateway["p99_ms"],
                gateway["p99_ms"] is not None and gateway["p99_ms"] <= TARGET_P99_MS,
            ),
        ]
        print(
            "issue #3 targets for the gateway: "
            + "; ".join(
                f"{name}: {'PASS' if ok else 'FAIL'} ({_fmt(value, '.3g')})"
                for name, value, ok in checks
            )
        )
    print()


def cmd_summarize(workdir: Path, out_json: Path) -> int:
    meta = _read_env(workdir / "meta.env")
    status = {row[0]: row[1] for row in _read_tsv(workdir / "status.tsv") if len(row) >= 2}
    sanity = [
        {"target": t, "check": c, "expected": e, "got": g, "ok": ok == "ok"}
        for t, c, e, g, ok in (row for row in _read_tsv(workdir / "sanity.tsv") if len(row) == 5)
    ]
    runs = load_runs(workdir)
    summary = summarize(runs)
    ratio = ratios(runs, summary)
    print_table(summary, ratio, status, meta)
    document = {
        "meta": {**meta, "clk_tck": CLK_TCK},
        "status": status,
        "sanity": sanity,
        "summary": summary,
        "ratios": ratio,
        "targets_issue_3": {
            "gateway/haproxy req/s >=": TARGET_RATIO_HAPROXY,
            "gateway cpu us/req <=": TARGET_CPU_US,
            "gateway p99 ms <=": TARGET_P99_MS,
        },
        "runs": runs,
    }
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    print(f"raw results: {out_json}")
    return 0


# --------------------------------------------------------------------------- small commands


def cmd_render(template: Path, out: Path, pairs: list[str]) -> int:
    text = template.read_text()
    for pair in pairs:
        key, _, value = pair.partition("=")
        text = text.replace(f"@@{key}@@", value)
    left = sorted(set(re.findall(r"@@([A-Z_]+)@@", text)))
    if left:
        print(f"render {template}: unfilled placeholders {left}", file=sys.stderr)
        return 2
    out.write_text(text)
    return 0


def cmd_free_ports(count: int) -> int:
    sockets = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
    print(" ".join(str(sock.getsockname()[1]) for sock in sockets))
    for sock in sockets:
        sock.close()
    return 0


def cmd_check_echo(head: str, user_id: str, admin: str) -> str:
    """Check the request head the upstream saw: one identity of each, the expected values."""
    problems = []
    lines = [line.rstrip("\r") for line in head.splitlines()[1:] if ":" in line]
    headers = [
        (name.strip().lower(), value.strip())
        for name, _, value in (line.partition(":") for line in lines)
    ]
    uid = [v for n, v in headers if n.replace("_", "-") == "x-user-id"]
    adm = [v for n, v in headers if n.replace("_", "-") == "x-is-admin"]
    xff = [v for n, v in headers if n == "x-forwarded-for"]
    if uid != [user_id]:
        problems.append(f"X-User-Id seen {uid} expected [{user_id!r}]")
    if adm != [admin]:
        problems.append(f"X-Is-Admin seen {adm} expected [{admin!r}]")
    if not xff:
        problems.append("no X-Forwarded-For")
    return "; ".join(problems) or f"X-User-Id={user_id} X-Is-Admin={admin} XFF={xff[0]}"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    command, args = argv[0], argv[1:]
    if command == "render" and len(args) >= 2:
        return cmd_render(Path(args[0]), Path(args[1]), args[2:])
    if command == "free-ports" and len(args) == 1:
        return cmd_free_ports(int(args[0]))
    if command == "cpu" and args:
        groups = [[int(pid) for pid in group.split(",") if pid] for group in args]
        print(" ".join(str(ticks) for ticks in cpu_ticks(groups)))
        return 0
    if command == "tree" and args:
        pids, _ = process_tree([int(pid) for pid in args])
        print(" ".join(str(pid) for pid in sorted(pids)))
        return 0
    if (
        command == "check-echo"
        and len(args) == 4
        and args[0] == "--user-id"
        and args[2] == "--admin"
    ):
        verdict = cmd_check_echo(sys.stdin.read(), args[1], args[3])
        print(verdict)
        return 0 if verdict.startswith("X-User-Id=") else 1
    if command == "summarize" and len(args) == 2:
        return cmd_summarize(Path(args[0]), Path(args[1]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
