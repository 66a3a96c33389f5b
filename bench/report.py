"""Helpers and the report of bench/run.sh (stdlib only).

    report.py render TEMPLATE OUT KEY=VALUE...   # fill @@KEY@@ placeholders
    report.py free-ports N                       # N distinct free loopback TCP ports
    report.py cpu --cores P,W GROUP...           # per group (PIDs joined by ","): CPU ticks
                                                 # used so far by those PIDs' process trees,
                                                 # then busy and total ticks of CPUs P and W
    report.py tree PID...                        # the PIDs and all their descendants
    report.py check-echo --user-id N --admin B   # stdin: request head seen by the upstream
    report.py readyz                             # stdin: the gateway's /readyz JSON, summed up
    report.py redis-ping HOST PORT               # exit 0 if a Redis answers PING there
    report.py redis-version HOST PORT            # redis_version of that server
    report.py redis-clean HOST PORT PREFIX       # delete every key starting with PREFIX
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

TARGETS = ("direct", "nginx", "haproxy", "gateway", "gateway-norevoke", "gateway-interpreted")
GATEWAYS = ("gateway", "gateway-norevoke", "gateway-interpreted")
NAME_WIDTH = max(map(len, TARGETS)) + 1
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Targets of issue #3 for one gateway worker on one core.
TARGET_RATIO_HAPROXY = 0.35
TARGET_CPU_US = 80.0
TARGET_P99_MS = 5.0
# Issue #4: req/s with revocation checks on within 10% of it with them off.
TARGET_RATIO_NOREVOKE = 0.90
# "Other" CPU (not ours) on a benchmark core above which the table warns.
NOISE_WARN_PERCENT = 10.0


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


def core_ticks(core: int) -> tuple[int, int, int]:
    """(task, irq, total) clock ticks of one CPU from /proc/stat.

    task = user + nice + system + steal (time of processes, and time the hypervisor took);
    irq = irq + softirq (mostly loopback TCP work done for whichever process is running).
    """
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name == f"cpu{core}":
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, values[:8])
            task = user + nice + system + steal
            return task, irq + softirq, task + irq + softirq + idle + iowait
    raise SystemExit(f"no cpu{core} in /proc/stat")


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


def _delta(before: str, after: str) -> int | None:
    if before in ("", "-") or after in ("", "-"):
        return None
    return int(after) - int(before)


def _sum(*values: int | None) -> int | None:
    return None if any(value is None for value in values) else sum(v or 0 for v in values)


def _pct(part: float | None, whole: float | None) -> float | None:
    if part is None or not whole:
        return None
    return round(100 * part / whole, 1)


def load_runs(workdir: Path) -> list[dict[str, Any]]:
    """One record per wrk run listed in ``runs.tsv``.

    A row is: round, target, wrk output file, wall ns, two snapshots (before, after) of
    "upstream-ticks proxy-ticks" + "task irq total" ticks of the proxies' core + the same of
    wrk's core (proxy "-" for direct), the CPU milliseconds wrk itself used, and the
    nanoseconds wrk's threads waited for a CPU while runnable (schedstat run_delay).
    """
    runs = []
    for row in _read_tsv(workdir / "runs.tsv"):
        round_no, target, wrk_file, wall_ns, before, after, wrk_cpu_ms, wrk_wait_ns = row
        wrk_path = Path(wrk_file)
        text = wrk_path.read_text(errors="replace") if wrk_path.exists() else ""
        wrk = parse_wrk(text)
        wall = int(wall_ns) / 1e9
        up, proxy, task_p, irq_p, total_p, task_w, irq_w, total_w = (
            _delta(b, a) for b, a in zip(before.split(), after.split(), strict=True)
        )
        # Everything in ticks; a core's total ticks is the window's length on that core.
        wrk_ticks = int(wrk_cpu_ms) * CLK_TCK / 1000
        ours_p = (up or 0) + (proxy or 0)
        per_tick = 1_000_000 / CLK_TCK  # µs
        record: dict[str, Any] = {
            "round": int(round_no),
            "target": target,
            **asdict(wrk),
            "errors": wrk.errors,
            "wall_seconds": round(wall, 3),
            "proxy_cpu_seconds": None if proxy is None else proxy / CLK_TCK,
            "upstream_cpu_seconds": None if up is None else up / CLK_TCK,
            "wrk_cpu_seconds": int(wrk_cpu_ms) / 1000,
            "proxy_cpu_us_per_req": None,
            "proxy_cpu_percent": None,
            "upstream_cpu_us_per_req": None,
            # Share of each core that was busy (processes + interrupts), spent in interrupts
            # (softirq: loopback TCP), and taken by processes that are NOT ours (other jobs on
            # the machine, hypervisor steal): a run with much "other" load was disturbed.
            "proxy_core_busy_percent": _pct(_sum(task_p, irq_p), total_p),
            "proxy_core_irq_percent": _pct(irq_p, total_p),
            "proxy_core_other_percent": _pct(
                None if task_p is None else max(0, task_p - ours_p), total_p
            ),
            "wrk_core_busy_percent": _pct(_sum(task_w, irq_w), total_w),
            "wrk_core_irq_percent": _pct(irq_w, total_w),
            "wrk_core_other_percent": _pct(
                None if task_w is None else max(0.0, task_w - wrk_ticks), total_w
            ),
            # wrk has its core to itself: time it waited for a CPU is time others took from it.
            "wrk_wait_percent": _pct(int(wrk_wait_ns) / 1e9, wall),
            "valid": wrk.requests > 0 and wrk.errors <= 0.01 * wrk.requests,
        }
        if not text.strip():
            record["wrk_output"] = "(missing)"
        elif wrk.requests == 0:
            record["wrk_output"] = text[-500:]
        if wrk.requests > 0:
            if proxy is not None:
                record["proxy_cpu_us_per_req"] = proxy * per_tick / wrk.requests
                record["proxy_cpu_percent"] = _pct(proxy / CLK_TCK, wall)
            if up is not None:
                record["upstream_cpu_us_per_req"] = up * per_tick / wrk.requests
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
            "proxy_core_busy_percent": _median([run["proxy_core_busy_percent"] for run in valid]),
            "proxy_core_other_percent": _median([run["proxy_core_other_percent"] for run in valid]),
            "wrk_core_other_percent": _median([run["wrk_core_other_percent"] for run in valid]),
            "wrk_wait_percent": _median([run["wrk_wait_percent"] for run in valid]),
        }
    return summary


def ratios(runs: list[dict[str, Any]], summary: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """gateway over haproxy, nginx, gateway-norevoke and gateway-interpreted: of the medians,
    and round by round.

    ``gateway/<peer>`` is the req/s ratio; ``gateway/<peer> cpu`` is the ratio of the CPU µs
    per request (above 1 for gateway-norevoke: the revocation checks cost CPU; below 1 for
    gateway-interpreted: what compiling the hot path saves).
    """
    out: dict[str, Any] = {}
    rounds = sorted({run["round"] for run in runs})
    pairs = [
        ("gateway/haproxy", "haproxy", "rps"),
        ("gateway/nginx", "nginx", "rps"),
        ("gateway/gateway-norevoke", "gateway-norevoke", "rps"),
        ("gateway/gateway-norevoke cpu", "gateway-norevoke", "proxy_cpu_us_per_req"),
        ("gateway/gateway-interpreted", "gateway-interpreted", "rps"),
        ("gateway/gateway-interpreted cpu", "gateway-interpreted", "proxy_cpu_us_per_req"),
    ]
    for key, peer, metric in pairs:
        mine, other = summary["gateway"][metric], summary[peer][metric]
        out[key] = round(mine / other, 3) if mine and other else None
        per_round = []
        for round_no in rounds:
            values = {
                run["target"]: run[metric]
                for run in runs
                if run["round"] == round_no and run["valid"]
            }
            if values.get("gateway") and values.get(peer):
                per_round.append(round(values["gateway"] / values[peer], 3))
        out[f"{key} per round"] = per_round
    return out


def revocation_verdict(ratio: dict[str, Any]) -> dict[str, bool | None]:
    """Issue #4: checks on within 10% of checks off, in req/s and in CPU per request.

    req/s: gateway/gateway-norevoke ≥ 0.90. CPU: the same "≥ 0.90" on requests per CPU
    second, i.e. gateway/gateway-norevoke CPU µs/req ≤ 1/0.90 (1.111).
    """
    rps, cpu = ratio["gateway/gateway-norevoke"], ratio["gateway/gateway-norevoke cpu"]
    return {
        "rps": None if rps is None else rps >= TARGET_RATIO_NOREVOKE,
        "cpu": None if cpu is None else cpu <= 1 / TARGET_RATIO_NOREVOKE,
    }


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _verdict(ok: bool | None, bound: str) -> str:
    return f"{'n/a' if ok is None else 'PASS' if ok else 'FAIL'} ({bound})"


def print_table(
    summary: dict[str, dict[str, Any]],
    ratio: dict[str, Any],
    status: dict[str, str],
    meta: dict[str, str],
    sanity: list[dict[str, Any]],
) -> None:
    print()
    for target in ("haproxy", *GATEWAYS):
        done = [check for check in sanity if check["target"] == target]
        if done:
            failed = [check["check"] for check in done if not check["ok"]]
            verdict = "all passed" if not failed else "FAILED: " + ", ".join(failed)
            print(f"sanity {target}: {len(done) - len(failed)}/{len(done)} — {verdict}")
    print(
        f"Median of {meta.get('rounds', '?')} round(s), wrk -t{meta.get('threads', '?')} "
        f"-c{meta.get('connections', '?')} -d{meta.get('duration', '?')} "
        f"(proxy + upstream on CPU {meta.get('proxy_cpu', '?')}, "
        f"wrk on CPU {meta.get('wrk_cpu', '?')})"
    )
    header = (
        f"{'target':<{NAME_WIDTH}}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'proxy µs/req':>14}{'proxy CPU%':>12}{'upstr µs/req':>14}{'core busy%':>12}"
        f"{'noise% p/w':>12}{'errors':>8}"
    )
    print(header)
    print("-" * len(header))
    for target in TARGETS:
        row = summary[target]
        state = status.get(target, "ok")
        if row["valid_runs"] == 0:
            reason = state
            if state == "ok" and row["runs"] == 0:
                reason = "not measured (not in TARGETS)"
            elif state == "ok":
                seen = [
                    c["got"]
                    for c in sanity
                    if c["target"] == target and c["check"] == "valid token"
                ]
                reason = f"no valid run: {row['errors']} errors (non-2xx or socket)" + (
                    f"; a valid token got HTTP {seen[0]} in the sanity check" if seen else ""
                )
            print(f"{target:<{NAME_WIDTH}}  n/a — {reason}")
            continue
        other = (
            f"{_fmt(row['proxy_core_other_percent'], '.0f')}/{_fmt(row['wrk_wait_percent'], '.0f')}"
        )
        print(
            f"{target:<{NAME_WIDTH}}{_fmt(row['rps'], ',.0f'):>10}{_fmt(row['p50_ms'], '.2f'):>9}"
            f"{_fmt(row['p99_ms'], '.2f'):>9}{_fmt(row['proxy_cpu_us_per_req'], '.1f'):>14}"
            f"{_fmt(row['proxy_cpu_percent'], '.0f'):>12}"
            f"{_fmt(row['upstream_cpu_us_per_req'], '.1f'):>14}"
            f"{_fmt(row['proxy_core_busy_percent'], '.0f'):>12}"
            f"{other:>12}{row['errors']:>8}"
        )
    print()
    noisy = [
        f"{target} {_fmt(row['proxy_core_other_percent'], '.0f')}%"
        f"/{_fmt(row['wrk_wait_percent'], '.0f')}%"
        for target, row in summary.items()
        if max(row["proxy_core_other_percent"] or 0, row["wrk_wait_percent"] or 0)
        > NOISE_WARN_PERCENT
    ]
    if noisy:
        print(
            "WARNING: other processes took CPU from the benchmark "
            "(CPU of others on the proxy core / time wrk waited for its core): "
            + ", ".join(noisy)
            + " — these figures are disturbed; rerun on a quiet machine."
        )
    issue4 = revocation_verdict(ratio)
    lines = [
        ("gateway/haproxy", "req/s", ""),
        ("gateway/nginx", "req/s", ""),
        ("gateway/gateway-norevoke", "req/s", _verdict(issue4["rps"], "≥ 0.90")),
        ("gateway/gateway-norevoke cpu", "CPU µs/req", _verdict(issue4["cpu"], "≤ 1.111")),
        ("gateway/gateway-interpreted", "req/s", ""),
        ("gateway/gateway-interpreted cpu", "CPU µs/req", ""),
    ]
    for key, unit, mark in lines:
        per_round = ", ".join(f"{value:.3f}" for value in ratio[f"{key} per round"])
        label = f"{key.removesuffix(' cpu')} {unit}:"
        print(
            f"{label:<41}{_fmt(ratio[key], '.3f'):>7}"
            + (f"  {mark}" if mark else "")
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
    print_table(summary, ratio, status, meta, sanity)
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
        "targets_issue_4": {
            "gateway/gateway-norevoke req/s >=": TARGET_RATIO_NOREVOKE,
            "gateway/gateway-norevoke cpu us/req <=": round(1 / TARGET_RATIO_NOREVOKE, 3),
            "pass": revocation_verdict(ratio),
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


def cmd_readyz(body: str) -> str:
    """``status=ready store=redis synced=true`` from a /readyz answer (store: its status)."""
    try:
        data = json.loads(body)
    except ValueError:
        return "status=unknown (no JSON from /readyz)"
    store = data.get("store") or {}
    words = [f"status={data.get('status', '?')}", f"store={store.get('backend', 'in-process')}"]
    if "synced" in store:
        words.append(f"synced={str(store['synced']).lower()}")
    return " ".join(words)


class Resp:
    """A minimal Redis (RESP2) client: enough for PING, SCAN and DEL."""

    def __init__(self, host: str, port: int, timeout: float = 2.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = self.sock.makefile("rb")

    def close(self) -> None:
        self.buf.close()
        self.sock.close()

    def call(self, *args: str) -> Any:
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(parts))
        return self._reply()

    def _reply(self) -> Any:
        line = self.buf.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("Redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(f"Redis: {rest.decode()}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.buf.read(size + 2)
            return data[:-2]
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._reply() for _ in range(count)]
        raise RuntimeError(f"unexpected Redis reply {line!r}")


def cmd_redis_ping(host: str, port: int) -> int:
    try:
        client = Resp(host, port, timeout=1.0)
        try:
            return 0 if client.call("PING") == "PONG" else 1
        finally:
            client.close()
    except (OSError, RuntimeError, ValueError):
        return 1


def cmd_redis_version(host: str, port: int) -> int:
    client = Resp(host, port)
    try:
        info = client.call("INFO", "server").decode()
    finally:
        client.close()
    match = re.search(r"^redis_version:(\S+)", info, re.MULTILINE)
    print(match.group(1) if match else "unknown")
    return 0


def cmd_redis_clean(host: str, port: int, prefix: str) -> int:
    """Delete every key starting with PREFIX (glob characters in it are escaped)."""
    if not prefix:
        print("redis-clean: refusing an empty prefix", file=sys.stderr)
        return 2
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
    client = Resp(host, port)
    deleted = 0
    try:
        cursor = "0"
        while True:
            cursor_raw, keys = client.call("SCAN", cursor, "MATCH", pattern, "COUNT", "1000")
            names = [key.decode() for key in keys if key.decode().startswith(prefix)]
            if names:
                deleted += int(client.call("DEL", *names))
            cursor = cursor_raw.decode()
            if cursor == "0":
                break
    finally:
        client.close()
    print(deleted)
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
    if command == "cpu" and len(args) >= 2 and args[0] == "--cores":
        # A group "-" (no process) prints "-"; then busy and total ticks of each core.
        groups = [[int(pid) for pid in group.split(",") if pid.isdigit()] for group in args[2:]]
        ticks = [
            str(t) if group else "-" for t, group in zip(cpu_ticks(groups), groups, strict=True)
        ]
        for core in args[1].split(","):
            ticks.extend(map(str, core_ticks(int(core))))
        print(" ".join(ticks))
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
    if command == "readyz" and not args:
        print(cmd_readyz(sys.stdin.read()))
        return 0
    if command == "redis-ping" and len(args) == 2:
        return cmd_redis_ping(args[0], int(args[1]))
    if command == "redis-version" and len(args) == 2:
        return cmd_redis_version(args[0], int(args[1]))
    if command == "redis-clean" and len(args) == 3:
        return cmd_redis_clean(args[0], int(args[1]), args[2])
    if command == "summarize" and len(args) == 2:
        return cmd_summarize(Path(args[0]), Path(args[1]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
