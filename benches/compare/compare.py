#!/usr/bin/env python3
"""Helpers for benches/compare/run: process-tree memory and CPU, waiting for
accepted sockets, running the load generator with its CPU accounted, and the
final table. Standard library only.

    compare.py tree PID                      -> JSON {rss_kb, pss_kb, cpu_s, procs, sockets}
    compare.py wait-sockets PID N TIMEOUT_S  -> waits until the tree holds N more sockets
    compare.py loadgen OUT.json -- CMD...    -> runs CMD, writes its wall time, exit
                                                status and CPU (all descendants)
    compare.py table RUN_DIR                 -> writes RUN_DIR/{summary.json,table.md}, prints the table
"""

import json
import os
import resource
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def children_map():
    kids = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree(pid):
    kids = children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def proc_mem_cpu(pid):
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().strip()
    except OSError:
        return None
    return rss, pss, cpu, comm


def sockets(pid):
    n = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                    n += 1
            except OSError:
                pass
    except OSError:
        pass
    return n


def tree_stats(pid, count_sockets=True):
    rss = pss = 0
    cpu = 0.0
    procs = []
    socks = 0
    for p in tree(pid):
        got = proc_mem_cpu(p)
        if got is None:
            continue
        rss += got[0]
        pss += got[1]
        cpu += got[2]
        procs.append(f"{got[3]}:{p}")
        if count_sockets:
            socks += sockets(p)
    return {"rss_kb": rss, "pss_kb": pss, "cpu_s": round(cpu, 2), "procs": procs, "sockets": socks}


def cmd_tree(args):
    print(json.dumps(tree_stats(int(args[0]))))


def cmd_wait_sockets(args):
    """Wait until the server tree holds `n` more sockets than at the start
    (accepted connections, not ones still in the listen backlog)."""
    pid, n, timeout = int(args[0]), int(args[1]), float(args[2])
    base = int(args[3]) if len(args) > 3 else tree_stats(pid)["sockets"]
    deadline = time.monotonic() + timeout
    got = 0
    while time.monotonic() < deadline:
        got = tree_stats(pid)["sockets"] - base
        if got >= n:
            print(got)
            return
        time.sleep(0.25)
    print(got)
    sys.exit(1)


def cmd_loadgen(args):
    out = args[0]
    assert args[1] == "--"
    cmd = args[2:]
    start = time.monotonic()
    rc = subprocess.run(cmd).returncode
    wall = time.monotonic() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out, "w") as f:
        json.dump(
            {
                "rc": rc,
                "wall_s": round(wall, 3),
                "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
                "cores_busy": round((usage.ru_utime + usage.ru_stime) / wall, 3) if wall > 0 else 0,
                "max_rss_kb_one_process": usage.ru_maxrss,
                "cmd": cmd,
            },
            f,
            indent=1,
        )
    sys.exit(rc)


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def lat(summary, key):
    obj = (summary or {}).get(key) or {}
    return obj.get("p50_us"), obj.get("p99_us"), obj.get("p999_us"), obj.get("max_us")


def fmt_int(v):
    return "—" if v is None else f"{v:,.0f}"


def fmt_ms(us):
    return "—" if us is None else (f"{us / 1000:.1f}" if us < 100_000 else f"{us / 1000:,.0f}")


def pair(a, b):
    return None if a is None else (a, b)


def fmt_pair(v):
    return "—" if v is None else f"{v[0]:,} ({v[1] if v[1] is not None else '?'})"


def fmt_cores(v):
    return "—" if v is None else f"{v:.2f}"


def cmd_table(args):
    run_dir = args[0]
    meta = load(os.path.join(run_dir, "meta.json")) or {}
    rows = []
    for name in meta.get("servers", []):
        d = os.path.join(run_dir, name)
        status = (load(os.path.join(d, "status.json")) or {}).get("status", "not run")
        row = {"server": name, "status": status}
        idle = load(os.path.join(d, "idle.json"))
        conn = load(os.path.join(d, "connect.json"))
        conn_run = load(os.path.join(d, "connect.run.json"))
        mem = load(os.path.join(d, "memory.json"))
        if conn:
            row["storm_connected"] = conn.get("connected")
            row["storm_errors"] = conn.get("errors_total")
            if conn.get("connected") and conn.get("elapsed_s"):
                row["conns_per_s"] = conn["connected"] / conn["elapsed_s"]
            row["storm_connect_p99_us"] = lat(conn, "connect_latency")[1]
        if conn_run:
            row["connect_client_cores"] = conn_run.get("cores_busy")
        if idle:
            row["idle_connected"] = idle.get("connected")
            row["idle_errors"] = idle.get("errors_total")
        if mem:
            # Divide by the connections the load generator completed (they
            # stay open through the hold), else by the sockets the server's
            # processes gained.
            held = (idle or {}).get("connected") or mem.get("sockets_accepted") or 0
            if held:
                b, a = mem["before"], mem["after"]
                row["idle_connections"] = held
                row["server_base_rss_kb"] = b["rss_kb"]
                row["rss_per_conn_b"] = (a["rss_kb"] - b["rss_kb"]) * 1024 / held
                row["pss_per_conn_b"] = (a["pss_kb"] - b["pss_kb"]) * 1024 / held
                row["server_processes"] = a["procs"]
        for kind in ("latency", "throughput"):
            fan = load(os.path.join(d, f"fanout-{kind}.json"))
            run = load(os.path.join(d, f"fanout-{kind}.run.json"))
            srv = load(os.path.join(d, f"fanout-{kind}.server.json"))
            if not fan:
                continue
            p50, p99, p999, mx = lat(fan, "push_latency")
            seconds = meta.get(f"{kind}_seconds", 0)
            received = fan.get("received") or 0
            span = seconds + (mx or 0) / 1e6
            row[kind] = {
                "published": fan.get("published"),
                "subscribed": fan.get("subscribed"),
                "expected": fan.get("expected"),
                "received": received,
                "lost": fan.get("lost"),
                "duplicated": fan.get("duplicated"),
                "errors": fan.get("errors_total"),
                "p50_us": p50,
                "p99_us": p99,
                "p999_us": p999,
                "max_us": mx,
                # The load generator's own figure when it has one (received
                # over first publication to last delivery); else a lower
                # bound: received over the publishing time plus the largest
                # latency seen.
                "deliveries_per_s": fan.get("deliveries_per_s") or (received / span if span > 0 else None),
                "offered_per_s": (fan.get("subscribed") or 0) * meta.get(f"{kind}_rate", 0) or None,
                "client_cores": run.get("cores_busy") if run else None,
                "client_cpu_s": run.get("cpu_s") if run else None,
                "server_cpu_s": srv.get("cpu_s") if srv else None,
                # Over the window from "every subscriber in" to the end.
                "server_cores_busy": srv.get("cores_busy") if srv else None,
                "client_cores_busy_publishing": srv.get("client_cores_busy") if srv else None,
            }
        rows.append(row)

    def best(getter, lower_is_better):
        vals = [getter(r) for r in rows if getter(r) is not None]
        if not vals:
            return None
        return min(vals) if lower_is_better else max(vals)

    def peer_best(getter, lower_is_better):
        vals = [getter(r) for r in rows if getter(r) is not None and not r["server"].startswith("ringcast")]
        if not vals:
            return None
        return min(vals) if lower_is_better else max(vals)

    metrics = [
        ("server RSS at start (MiB)", lambda r: r.get("server_base_rss_kb") and r["server_base_rss_kb"] / 1024, True, lambda v: "—" if v is None else f"{v:.1f}"),
        ("idle RSS / connection (B)", lambda r: r.get("rss_per_conn_b"), True, fmt_int),
        ("idle PSS / connection (B)", lambda r: r.get("pss_per_conn_b"), True, fmt_int),
        ("idle connections held (errors)", lambda r: pair(r.get("idle_connections"), r.get("idle_errors")), False, fmt_pair),
        ("connections / s (storm)", lambda r: r.get("conns_per_s"), False, fmt_int),
        ("storm: connected (errors)", lambda r: pair(r.get("storm_connected"), r.get("storm_errors")), False, fmt_pair),
        ("fan-out subscribers (errors), throughput run", lambda r: pair((r.get("throughput") or {}).get("subscribed"), (r.get("throughput") or {}).get("errors")), False, fmt_pair),
        ("offered deliveries / s (throughput run)", lambda r: (r.get("throughput") or {}).get("offered_per_s"), False, fmt_int),
        ("fan-out deliveries / s (throughput run)", lambda r: (r.get("throughput") or {}).get("deliveries_per_s"), False, fmt_int),
        ("lost (throughput run)", lambda r: (r.get("throughput") or {}).get("lost"), True, fmt_int),
        ("p99 ms (throughput run)", lambda r: (r.get("throughput") or {}).get("p99_us"), True, fmt_ms),
        ("p50 ms (fixed rate)", lambda r: (r.get("latency") or {}).get("p50_us"), True, fmt_ms),
        ("p99 ms (fixed rate)", lambda r: (r.get("latency") or {}).get("p99_us"), True, fmt_ms),
        ("p999 ms (fixed rate)", lambda r: (r.get("latency") or {}).get("p999_us"), True, fmt_ms),
        ("lost (fixed rate)", lambda r: (r.get("latency") or {}).get("lost"), True, fmt_int),
        ("server cores busy (throughput run, publishing)", lambda r: (r.get("throughput") or {}).get("server_cores_busy"), True, fmt_cores),
        ("client cores busy (throughput run, publishing)", lambda r: (r.get("throughput") or {}).get("client_cores_busy_publishing"), True, fmt_cores),
        ("client cores busy (fixed rate, publishing)", lambda r: (r.get("latency") or {}).get("client_cores_busy_publishing"), True, fmt_cores),
        ("client cores busy (storm, whole run)", lambda r: r.get("connect_client_cores"), True, fmt_cores),
    ]
    # Leave out measures no server has (e.g. the offered rate in a closed loop).
    metrics = [m for m in metrics if any(m[1](r) is not None for r in rows)]
    names = [r["server"] for r in rows]
    lines = ["| measure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, get, _, fmt in metrics:
        lines.append(f"| {label} | " + " | ".join(fmt(get(r)) for r in rows) + " |")
    lines.append("| status | " + " | ".join(r["status"] for r in rows) + " |")

    # Ratios: each server against the best *peer* (not Ringcast) per measure.
    ratio_metrics = [m for m in metrics if not m[0].startswith(("lost", "client", "server", "offered", "idle connections", "storm", "fan-out subscribers", "p99 ms (throughput"))]
    rlines = ["| ratio to best peer | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, get, lower, _ in ratio_metrics:
        b = peer_best(get, lower)
        cells = []
        for r in rows:
            v = get(r)
            if v is None or b in (None, 0) or v == 0:
                cells.append("—")
            else:
                # > 1 means better than the best peer.
                cells.append(f"{(b / v) if lower else (v / b):.2f}×")
        rlines.append(f"| {label} | " + " | ".join(cells) + " |")

    text = "\n".join(lines) + "\n\n" + "\n".join(rlines) + "\n"
    head = [
        f"# Side by side: Ringcast and peers ({meta.get('date', '?')})",
        "",
        f"Command: `{meta.get('command', '')}`",
        "",
        "Host: " + meta.get("host", "?"),
        "",
        "Scenario: " + meta.get("scenario", "?"),
        "",
        "Versions:",
        "",
    ]
    head += [f"- {k}: {v}" for k, v in (meta.get("versions") or {}).items()]
    head += ["", "Ratios: value ÷ best peer (higher-is-better measures) or best peer ÷ value "
             "(lower-is-better), so above 1× is better than every peer; the best peer is "
             "the best of the non-Ringcast servers.", ""]
    notes = meta.get("notes") or []
    tail = [""] + ([f"- {n}" for n in notes] if notes else [])
    with open(os.path.join(run_dir, "table.md"), "w") as f:
        f.write("\n".join(head) + "\n" + text + "\n".join(tail) + "\n")
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(text)


def main():
    cmds = {
        "tree": cmd_tree,
        "wait-sockets": cmd_wait_sockets,
        "loadgen": cmd_loadgen,
        "table": cmd_table,
    }
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    cmds[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
