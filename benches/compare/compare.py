#!/usr/bin/env python3
"""Helpers for benches/compare/run: process-tree memory and CPU, waiting for
accepted sockets, running the load generator with its CPU accounted, resource
timelines, the final table and HTML report, the exit-status verdict, and
comparing two runs. Standard library only.

    compare.py tree PID                      -> JSON {rss_kb, pss_kb, cpu_s, procs, sockets}
    compare.py wait-sockets PID N TIMEOUT_S  -> waits until the tree holds N more sockets
    compare.py loadgen OUT.json -- CMD...    -> runs CMD, writes its wall time, exit
                                                status and CPU (all descendants)
    compare.py sample PID OUT.csv PHASE [S]  -> appends the tree's CPU s and RSS every S
                                                (0.5) s until PID exits
    compare.py meta OUT VERSIONS SERVERS CMD [NOTE...]
                                             -> meta.json from run's exported knobs
    compare.py line SERVER RUN RESULT.json [RATE]
                                             -> one progress line for a finished run
    compare.py table RUN_DIR [--report=F]    -> writes RUN_DIR/{summary.json,table.md,report.html}
                                                (or F), prints the table
    compare.py report DIR|summary.json [--report=F]
                                             -> (re)writes the HTML report only
    compare.py verdict DIR|summary.json      -> exit 1 naming each server that failed, was
                                                skipped, lost or duplicated messages
    compare.py diff A B [--json]             -> each measure's change from run A to run B,
                                                better / worse / same
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


def load_summary(path):
    """A results directory or its summary.json -> the summary dict."""
    if os.path.isdir(path):
        path = os.path.join(path, "summary.json")
    got = load(path)
    if got is None:
        print(f"compare.py: cannot read {path}", file=sys.stderr)
        sys.exit(2)
    return got


# ---------------------------------------------------------------- sampling
def cmd_sample(args):
    """Every INTERVAL s, the CPU time and RSS of PID's process tree (the
    server and its children: nginx workers, Pushpin's processes), appended
    to OUT as `phase,t_unix,cpu_s,rss_kb,procs`, until PID exits. CPU of a
    child that exited in between is lost: a timeline, not an account."""
    pid, out, phase = int(args[0]), args[1], args[2]
    interval = float(args[3]) if len(args) > 3 else 0.5
    with open(out, "a") as f:
        while os.path.exists(f"/proc/{pid}"):
            cpu = 0.0
            rss = n = 0
            for p in tree(pid):
                try:
                    with open(f"/proc/{p}/stat") as st:
                        fields = st.read().rsplit(")", 1)[1].split()
                    with open(f"/proc/{p}/status") as st:
                        for line in st:
                            if line.startswith("VmRSS:"):
                                rss += int(line.split()[1])
                                break
                except (OSError, ValueError, IndexError):
                    continue
                cpu += (int(fields[11]) + int(fields[12])) / CLK_TCK
                n += 1
            if n:
                f.write(f"{phase},{time.time():.3f},{cpu:.2f},{rss},{n}\n")
                f.flush()
            time.sleep(interval)


def read_resources(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(",")
                if len(parts) >= 4:
                    out.append([parts[0], float(parts[1]), float(parts[2]), int(parts[3])])
    except (OSError, ValueError):
        pass
    return out


# ---------------------------------------------------------------- formatting
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


# ---------------------------------------------------------------- saturation
# A fixed-rate run is saturated when the server delivered well under what was
# offered, or when its latency grew through the run: then the latency figure
# is the length of the server's backlog when the run stopped, not a latency.
SATURATION_DELIVERED = 0.8  # achieved / offered below this
SATURATION_GROWTH = 3.0  # last quarter's p99 over the first quarter's
SATURATION_FLOOR_US = 250_000  # and the last quarter's p99 at least this


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else None


def saturation(run):
    """The reason a run is saturated, or None. `run` is a row's latency or
    throughput entry (summary.json): judged from the figures every time
    (table, report, diff), so a summary written by an older run is judged
    by the current rules."""
    if not run:
        return None
    reasons = []
    offered, got = run.get("offered_per_s"), run.get("deliveries_per_s")
    if offered and got is not None and got < SATURATION_DELIVERED * offered:
        reasons.append(f"delivered {got:,.0f}/s of {offered:,.0f}/s offered ({got / offered:.0%})")
    trend = [v for v in (run.get("p99_trend_us") or []) if v]
    if len(trend) >= 4:
        q = max(len(trend) // 4, 1)
        first, last = median(trend[:q]), median(trend[-q:])
        if last >= SATURATION_FLOOR_US and last > SATURATION_GROWTH * first:
            reasons.append(f"p99 grew from {fmt_ms(first)} ms to {fmt_ms(last)} ms over the run")
    return "; ".join(reasons) or None


# ---------------------------------------------------------------- rows
def build_rows(run_dir, meta):
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
                # p99 of each live sample while messages flowed: the trend
                # the saturation check reads.
                "p99_trend_us": [t.get("p99_us_max") for t in fan.get("timeline") or [] if t.get("msgs_per_s")],
                "client_cores": run.get("cores_busy") if run else None,
                "client_cpu_s": run.get("cpu_s") if run else None,
                "server_cpu_s": srv.get("cpu_s") if srv else None,
                # Over the window from "every subscriber in" to the end.
                "server_cores_busy": srv.get("cores_busy") if srv else None,
                "client_cores_busy_publishing": srv.get("client_cores_busy") if srv else None,
            }
            row[kind]["saturated"] = saturation(row[kind])
        row["resources"] = read_resources(os.path.join(d, "resources.csv"))
        rows.append(row)
    return rows


def sat_ms(kind, key):
    """A latency cell: `saturated (…)` instead of a plain figure when the
    run was saturated."""

    def get(r):
        return (r.get(kind) or {}).get(key)

    def fmt(r):
        v = get(r)
        if v is not None and saturation(r.get(kind)):
            return f"saturated ({fmt_ms(v)})"
        return fmt_ms(v)

    return get, fmt


def metrics():
    """(label, getter(row), lower_is_better, cell(row)) per table row."""

    def plain(get, fmt):
        return lambda r: fmt(get(r))

    out = []

    def add(label, get, lower, fmt, cell=None):
        out.append((label, get, lower, cell or plain(get, fmt)))

    add("server RSS at start (MiB)", lambda r: r.get("server_base_rss_kb") and r["server_base_rss_kb"] / 1024, True,
        lambda v: "—" if v is None else f"{v:.1f}")
    add("idle RSS / connection (B)", lambda r: r.get("rss_per_conn_b"), True, fmt_int)
    add("idle PSS / connection (B)", lambda r: r.get("pss_per_conn_b"), True, fmt_int)
    add("idle connections held (errors)", lambda r: pair(r.get("idle_connections"), r.get("idle_errors")), False, fmt_pair)
    add("connections / s (storm)", lambda r: r.get("conns_per_s"), False, fmt_int)
    add("storm: connected (errors)", lambda r: pair(r.get("storm_connected"), r.get("storm_errors")), False, fmt_pair)
    add("fan-out subscribers (errors), throughput run",
        lambda r: pair((r.get("throughput") or {}).get("subscribed"), (r.get("throughput") or {}).get("errors")), False, fmt_pair)
    add("offered deliveries / s (throughput run)", lambda r: (r.get("throughput") or {}).get("offered_per_s"), False, fmt_int)
    add("fan-out deliveries / s (throughput run)", lambda r: (r.get("throughput") or {}).get("deliveries_per_s"), False, fmt_int)
    add("lost (throughput run)", lambda r: (r.get("throughput") or {}).get("lost"), True, fmt_int)
    get, cell = sat_ms("throughput", "p99_us")
    add("p99 ms (throughput run)", get, True, None, cell)
    add("offered deliveries / s (fixed rate)", lambda r: (r.get("latency") or {}).get("offered_per_s"), False, fmt_int)
    add("achieved deliveries / s (fixed rate)", lambda r: (r.get("latency") or {}).get("deliveries_per_s"), False, fmt_int)
    for q, key in (("p50", "p50_us"), ("p99", "p99_us"), ("p999", "p999_us")):
        get, cell = sat_ms("latency", key)
        add(f"{q} ms (fixed rate)", get, True, None, cell)
    add("lost (fixed rate)", lambda r: (r.get("latency") or {}).get("lost"), True, fmt_int)
    add("server cores busy (throughput run, publishing)", lambda r: (r.get("throughput") or {}).get("server_cores_busy"), True, fmt_cores)
    add("client cores busy (throughput run, publishing)",
        lambda r: (r.get("throughput") or {}).get("client_cores_busy_publishing"), True, fmt_cores)
    add("client cores busy (fixed rate, publishing)", lambda r: (r.get("latency") or {}).get("client_cores_busy_publishing"), True, fmt_cores)
    add("client cores busy (storm, whole run)", lambda r: r.get("connect_client_cores"), True, fmt_cores)
    return out


def tables(rows):
    """(header, cells) of the table and of the ratios."""
    # Leave out measures no server has (e.g. the offered rate in a closed loop).
    ms = [m for m in metrics() if any(m[1](r) is not None for r in rows)]
    names = [r["server"] for r in rows]
    body = [[label] + [cell(r) for r in rows] for label, _, _, cell in ms]
    body.append(["status"] + [r["status"] for r in rows])

    def usable(r, label):
        # A saturated run's latency is its backlog, not a figure to rank.
        kind = "latency" if "fixed rate" in label else "throughput"
        return not (label.startswith("p") and " ms " in label and saturation(r.get(kind)))

    # Ratios: each server against the best *peer* (not Ringcast) per measure.
    ratio_ms = [m for m in ms if not m[0].startswith(("lost", "client", "server", "offered", "achieved", "idle connections", "storm",
                                                      "fan-out subscribers", "p99 ms (throughput"))]
    rbody = []
    for label, get, lower, _ in ratio_ms:
        vals = [get(r) for r in rows if get(r) is not None and usable(r, label) and not r["server"].startswith("ringcast")]
        b = (min(vals) if lower else max(vals)) if vals else None
        cells = []
        for r in rows:
            v = get(r)
            if v is None or b in (None, 0) or v == 0 or not usable(r, label):
                cells.append("—")
            else:
                # > 1 means better than the best peer.
                cells.append(f"{(b / v) if lower else (v / b):.2f}×")
        rbody.append([label] + cells)
    return (["measure"] + names, body), (["ratio to best peer"] + names, rbody)


def markdown(header, body):
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


# ---------------------------------------------------------------- verdict
def verdict(summary):
    """Why the run's exit status is 1: a server that failed, was skipped or
    not run, or that lost or duplicated messages. Empty: exit 0."""
    reasons = []
    for r in summary.get("rows") or []:
        status = r.get("status", "not run")
        if status.startswith(("failed", "skipped", "not run")):
            reasons.append(f"{r['server']}: {status}")
        for kind, label in (("latency", "fixed-rate"), ("throughput", "throughput")):
            run = r.get(kind) or {}
            if run.get("lost"):
                reasons.append(f"{r['server']}: {run['lost']:,} messages lost in the {label} run")
            if run.get("duplicated"):
                reasons.append(f"{r['server']}: {run['duplicated']:,} messages duplicated in the {label} run")
    return reasons


def cmd_verdict(args):
    reasons = verdict(load_summary(args[0]))
    for reason in reasons:
        print(f"FAIL {reason}", file=sys.stderr)
    sys.exit(1 if reasons else 0)


# ---------------------------------------------------------------- outputs
def write_report(summary, path):
    import report  # benches/compare/report.py, next to this file

    table, ratios = tables(summary["rows"])
    with open(path, "w") as f:
        f.write(report.build_html(summary, table, ratios, verdict(summary)))
    return path


def write_outputs(run_dir, summary, report_path=None):
    table, ratios = tables(summary["rows"])
    meta = summary["meta"]
    text = markdown(*table) + "\n\n" + markdown(*ratios) + "\n"
    sat = [f"- {r['server']} saturated in the {kind} run: {saturation(r[kind])}"
           for r in summary["rows"] for kind in ("latency", "throughput") if saturation(r.get(kind))]
    if sat:
        text += ("\nSaturated: the server was offered more than it delivered, so its latency cells are its backlog "
                 "when the run stopped, not a latency:\n\n" + "\n".join(sat) + "\n")
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
        json.dump(summary, f, indent=1)
    return text, write_report(summary, report_path or os.path.join(run_dir, "report.html"))


def opt(args, name):
    """--name=VALUE or --name VALUE out of args (removed), or None."""
    for i, a in enumerate(args):
        if a == f"--{name}" and i + 1 < len(args):
            v = args[i + 1]
            del args[i:i + 2]
            return v
        if a.startswith(f"--{name}="):
            del args[i]
            return a.split("=", 1)[1]
    return None


def cmd_table(args):
    report_path = opt(args, "report")
    run_dir = args[0]
    meta = load(os.path.join(run_dir, "meta.json")) or {}
    summary = {"meta": meta, "rows": build_rows(run_dir, meta)}
    text, path = write_outputs(run_dir, summary, report_path)
    print(text)
    print(f"report: {path}", file=sys.stderr)


def cmd_report(args):
    """Writes the HTML report from a summary.json alone (nothing else in
    its directory changes); saturation is judged again with the current
    rules."""
    report_path = opt(args, "report")
    src = args[0]
    summary = load_summary(src)
    for r in summary.get("rows") or []:
        for kind in ("latency", "throughput"):
            if r.get(kind):
                r[kind]["saturated"] = saturation(r[kind])
    run_dir = src if os.path.isdir(src) else os.path.dirname(os.path.abspath(src))
    print(write_report(summary, report_path or os.path.join(run_dir, "report.html")))


# ---------------------------------------------------------------- diff
# (label, getter(row), higher_is_better)
DIFF_MEASURES = [
    ("idle RSS / connection (B)", lambda r: r.get("rss_per_conn_b"), False),
    ("idle PSS / connection (B)", lambda r: r.get("pss_per_conn_b"), False),
    ("connections / s (storm)", lambda r: r.get("conns_per_s"), True),
    ("fan-out deliveries / s (throughput run)", lambda r: (r.get("throughput") or {}).get("deliveries_per_s"), True),
    ("p99 ms (throughput run)", lambda r: (r.get("throughput") or {}).get("p99_us"), False),
    ("lost (throughput run)", lambda r: (r.get("throughput") or {}).get("lost"), False),
    ("achieved deliveries / s (fixed rate)", lambda r: (r.get("latency") or {}).get("deliveries_per_s"), True),
    ("p50 ms (fixed rate)", lambda r: (r.get("latency") or {}).get("p50_us"), False),
    ("p99 ms (fixed rate)", lambda r: (r.get("latency") or {}).get("p99_us"), False),
    ("p999 ms (fixed rate)", lambda r: (r.get("latency") or {}).get("p999_us"), False),
    ("lost (fixed rate)", lambda r: (r.get("latency") or {}).get("lost"), False),
]
SAME_WITHIN = 0.01  # changes under 1% read "same"


def diff(a, b):
    """Per server in both runs and per measure both have: A, B, change and
    direction (better / worse / same), from B's point of view."""
    out = []
    rows_a = {r["server"]: r for r in a.get("rows") or []}
    for rb in b.get("rows") or []:
        ra = rows_a.get(rb["server"])
        if ra is None:
            continue
        for label, get, higher in DIFF_MEASURES:
            va, vb = get(ra), get(rb)
            if va is None or vb is None:
                continue
            us = " ms " in label  # latencies are stored in µs, shown in ms
            change = None if va == 0 else (vb - va) / abs(va)
            if va == vb or (change is not None and abs(change) < SAME_WITHIN):
                direction = "same"
            else:
                direction = "better" if (vb > va) == higher else "worse"
            out.append({"server": rb["server"], "measure": label, "a": va / 1000 if us else va,
                        "b": vb / 1000 if us else vb, "change": change, "direction": direction,
                        "higher_is_better": higher})
        for kind in ("latency", "throughput"):
            sa, sb = saturation(ra.get(kind)), saturation(rb.get(kind))
            if bool(sa) != bool(sb):
                out.append({"server": rb["server"], "measure": f"saturated ({kind} run)", "a": bool(sa), "b": bool(sb),
                            "change": None, "direction": "worse" if sb else "better", "higher_is_better": False})
        if ra.get("status") != rb.get("status"):
            out.append({"server": rb["server"], "measure": "status", "a": ra.get("status"), "b": rb.get("status"),
                        "change": None, "direction": "better" if rb.get("status") == "ok" else
                        ("worse" if ra.get("status") == "ok" else "changed"), "higher_is_better": None})
    return out


def fmt_diff_value(v):
    if isinstance(v, bool) or isinstance(v, str):
        return str(v)
    return f"{v:,.1f}" if abs(v) < 100 and v != int(v) else f"{v:,.0f}"


def cmd_diff(args):
    as_json = "--json" in args
    args = [a for a in args if a != "--json"]
    a, b = load_summary(args[0]), load_summary(args[1])
    d = diff(a, b)
    if as_json:
        print(json.dumps(d, indent=1))
        return
    print(f"A: {args[0]} ({(a.get('meta') or {}).get('date', '?')})")
    print(f"B: {args[1]} ({(b.get('meta') or {}).get('date', '?')})")
    # Where the results went and how the binaries were got are not
    # parameters of the measurement.
    ea, eb = ((x.get("meta") or {}).get("env") or {} for x in (a, b))
    differ = [f"{k} {ea.get(k, '?')} -> {eb.get(k, '?')}" for k in sorted(set(ea) | set(eb))
              if k not in ("OUT_DIR", "INSTALL", "BUILD", "BIN_DIR") and ea.get(k) != eb.get(k)]
    if differ:
        print("note: the runs' parameters differ, compare with care: " + ", ".join(differ))
    if not d:
        print("no server and measure in common")
        return
    w = max(len(x["server"]) for x in d)
    m = max(len(x["measure"]) for x in d)
    for x in d:
        pct = "" if x["change"] is None else f"{x['change']:+.1%}"
        hint = "" if x["higher_is_better"] is None else ("(higher is better)" if x["higher_is_better"] else "(lower is better)")
        print(f"{x['server']:<{w}}  {x['measure']:<{m}}  {fmt_diff_value(x['a']):>12} -> {fmt_diff_value(x['b']):>12}"
              f"  {pct:>8}  {x['direction'].upper():<7} {hint}")


# ---------------------------------------------------------------- progress
def cmd_line(args):
    """One line for a finished run: server, run, its headline figures."""
    server, run, path = args[0], args[1], args[2]
    r = load(path)
    if r is None:
        print(f"{server} {run}: no result")
        return
    p50, p99, p999, _ = lat(r, "push_latency" if r.get("scenario") == "fanout" else "connect_latency")
    if r.get("scenario") == "fanout":
        sat = saturation({"offered_per_s": (r.get("subscribed") or 0) * float(args[3]) if len(args) > 3 and float(args[3]) else None,
                          "deliveries_per_s": r.get("deliveries_per_s"),
                          "p99_trend_us": [t.get("p99_us_max") for t in r.get("timeline") or [] if t.get("msgs_per_s")]})
        print(f"{server} {run}: {r.get('subscribed', 0):,} subscribers, {r.get('published', 0):,} published, "
              f"{(r.get('deliveries_per_s') or 0):,.0f} deliveries/s, p50 {fmt_ms(p50)} p99 {fmt_ms(p99)} "
              f"p999 {fmt_ms(p999)} ms, lost {r.get('lost', 0):,}, duplicated {r.get('duplicated', 0):,}"
              + (f"  SATURATED: {sat}" if sat else ""))
    else:
        rate = (r.get("connected") or 0) / r["elapsed_s"] if r.get("elapsed_s") else 0
        print(f"{server} {run}: {r.get('connected', 0):,} of {r.get('attempted', r.get('connections', 0)):,} connected "
              f"({rate:,.0f}/s), errors {r.get('errors_total', 0):,}, connect p50 {fmt_ms(p50)} p99 {fmt_ms(p99)} ms")


# ---------------------------------------------------------------- meta
def cmd_meta(args):
    """Writes meta.json: the effective parameters (every knob's value as the
    run used it, defaults included), host facts and versions."""
    import datetime
    import platform

    out, versions, servers, command, *notes = args
    env_keys = ["SERVERS", "CONNECTIONS", "IDLE_CONNECT_RATE", "CONNECT_RATE", "HOLD_S", "FANOUT_CONNECTIONS",
                "FANOUT_CONNECT_RATE", "LATENCY_RATE", "LATENCY_SECONDS", "THROUGHPUT_PUBLICATIONS",
                "THROUGHPUT_SECONDS", "WINDOW", "THROUGHPUT_RATE", "WORKERS", "SERVER_THREADS", "OUT_DIR", "INSTALL",
                "BUILD", "BIN_DIR"]
    env = {k: os.environ[k] for k in env_keys if k in os.environ}
    missing = [k for k in env_keys if k not in os.environ]
    if missing:  # run exports every knob: a missing one is a bug in run
        print(f"compare.py meta: not exported by run: {' '.join(missing)}", file=sys.stderr)
        sys.exit(2)
    v = {}
    with open(versions) as f:
        for line in f:
            if "=" in line:
                k, val = line.rstrip("\n").split("=", 1)
                v[k] = val
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    cpu_model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    os_name = "?"
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    os_name = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    closed = os.environ.get("CLOSED_LOOP") == "1"
    e = os.environ
    now = datetime.datetime.now()
    meta = {
        "date": now.date().isoformat(),
        "time": now.strftime("%H:%M"),
        "command": command,
        "env": env,
        "host": f"{platform.node()}, {os.cpu_count()} cores, {mem_kb // 1048576} GiB, kernel {platform.release()}; "
                "client and servers share the cores (loopback)",
        "host_facts": {
            "host": platform.node(),
            "cores": os.cpu_count(),
            "cpu": cpu_model,
            "memory": f"{mem_kb / 1048576:.1f} GiB",
            "kernel": platform.release(),
            "os": os_name,
            "open files per process": f"{resource.getrlimit(resource.RLIMIT_NOFILE)[0]:,}",
            "network": "loopback (127.0.0.1): client and servers share the cores",
            "Ringcast I/O drivers": ", ".join(s.split("-", 1)[1] for s in servers.split() if s.startswith("ringcast-")) or "—",
        },
        "scenario": (f"idle: {e['CONNECTIONS']} connections opened at {e['IDLE_CONNECT_RATE']}/s, held {e['HOLD_S']} s; "
                     f"storm: {e['CONNECTIONS']} connections offered at {e['CONNECT_RATE']}/s; "
                     f"fan-out: {e['FANOUT_CONNECTIONS']} subscribers on one channel, "
                     f"fixed rate {e['LATENCY_RATE']}/s for {e['LATENCY_SECONDS']} s (latency) and "
                     + (f"closed loop (window {e['WINDOW']}) for {e['THROUGHPUT_PUBLICATIONS']} publications or "
                        f"{e['THROUGHPUT_SECONDS']} s (deliveries/s); " if closed else
                        f"{e['THROUGHPUT_RATE']}/s for {e['THROUGHPUT_SECONDS']} s (deliveries/s); ")
                     + f"{e['WORKERS']} load generator worker(s); {e['SERVER_THREADS']} server threads/processes"),
        "servers": servers.split(),
        "hold_s": float(e["HOLD_S"]),
        "latency_seconds": float(e["LATENCY_SECONDS"]),
        "latency_rate": float(e["LATENCY_RATE"]),
        "throughput_rate": 0 if closed else float(e["THROUGHPUT_RATE"]),
        "throughput_closed_loop": closed,
        "throughput_seconds": float(e["THROUGHPUT_SECONDS"]),
        "versions": v,
        "notes": notes,
    }
    with open(out, "w") as f:
        json.dump(meta, f, indent=1)


def main():
    cmds = {
        "tree": cmd_tree,
        "wait-sockets": cmd_wait_sockets,
        "loadgen": cmd_loadgen,
        "sample": cmd_sample,
        "meta": cmd_meta,
        "line": cmd_line,
        "table": cmd_table,
        "report": cmd_report,
        "verdict": cmd_verdict,
        "diff": cmd_diff,
    }
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    cmds[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
