#!/usr/bin/env python3
"""The summary of one benches/shard-compare.sh run: reads the run directory
(meta.json, runs.tsv, each server's load generator JSON, idle_memory CSV and
kernel_floor stats) and writes summary.md and summary.json there, printing
the former. Standard library only; it measures nothing itself.

    shard-compare-summary.py RUN_DIR [ELAPSED_S]

Ratios are plain quotients of the two values (a ÷ b): for memory and
latency below 1x is better for a, for deliveries/s above 1x is.
"""

import csv
import json
import os
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def ratio(a, b):
    if a is None or b in (None, 0):
        return "—"
    return f"{a / b:.2f}×"


def ms(us):
    if us is None:
        return "—"
    return f"{us / 1000:.2f}" if us < 10_000 else f"{us / 1000:.1f}" if us < 1_000_000 else f"{us / 1000:,.0f}"


def num(v):
    return "—" if v is None else f"{v:,.0f}"


def cores(v):
    return "—" if v is None else f"{v:.2f}"


def idle(run_dir, server):
    """idle_memory's CSV lines: connections,rss_bytes,rss_growth_bytes,bytes_per_connection."""
    out = {}
    try:
        with open(os.path.join(run_dir, server, "idle-memory.csv")) as f:
            for row in csv.reader(f):
                if len(row) == 4 and row[0].isdigit():
                    out[int(row[0])] = {"rss_bytes": int(row[1]), "growth_bytes": int(row[2]), "bytes_per_connection": int(row[3])}
    except OSError:
        pass
    return out


def fan(run_dir, server, run):
    s = load(os.path.join(run_dir, server, f"{run}.json"))
    if not s:
        return None
    push = s.get("push_latency") or {}
    srv = load(os.path.join(run_dir, server, f"{run}.server.json")) or {}
    return {
        "subscribed": s.get("subscribed"),
        "connected": s.get("connected"),
        "published": s.get("published"),
        "publish_errors": s.get("publish_errors"),
        "expected": s.get("expected"),
        "received": s.get("received"),
        "lost": s.get("lost"),
        "duplicated": s.get("duplicated"),
        "out_of_order": s.get("out_of_order"),
        "errors_total": s.get("errors_total"),
        "errors": s.get("errors"),
        "sent": s.get("sent"),
        "p50_us": push.get("p50_us"),
        "p99_us": push.get("p99_us"),
        "p999_us": push.get("p999_us"),
        "max_us": push.get("max_us"),
        "ack": s.get("ack_latency"),
        "deliveries_per_s": s.get("deliveries_per_s"),
        "client_cores_busy": (s.get("client") or {}).get("cores_busy"),
        "server_cpu_s": srv.get("server_cpu_s"),
        "server_cores_busy": srv.get("server_cores_busy"),
        "elapsed_s": s.get("elapsed_s"),
    }


def main():
    run_dir = sys.argv[1]
    elapsed = sys.argv[2] if len(sys.argv) > 2 else None
    meta = load(os.path.join(run_dir, "meta.json")) or {}
    params = meta.get("params", {})
    servers = params.get("SERVERS", "before after floor nchan").split()
    engines = [s for s in servers if s in ("before", "after")]
    runs = []
    try:
        with open(os.path.join(run_dir, "runs.tsv")) as f:
            runs = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    except OSError:
        pass
    out = {"meta": meta, "elapsed_s": elapsed, "runs": runs, "idle": {}, "latency": {}, "floor": {}, "throughput": {}, "chat": {}}
    md = [f"# Shard compare: before and after ({meta.get('date', '?')})", ""]
    md.append(f"Command: `{meta.get('command', '')}`" + (f", {elapsed} s in all." if elapsed else ""))
    md += ["", "Host: " + meta.get("host", "?"), ""]
    for name, b in (meta.get("binaries") or {}).items():
        md.append(f"- {name}: `{b.get('path')}` (sha256 {b.get('sha256')}…, {b.get('mtime')})")
    if meta.get("nchan"):
        md.append(f"- nchan: {meta['nchan']}")
    md += ["", "Parameters: " + ", ".join(f"{k}={v}" for k, v in params.items()), ""]
    md += ["Ratios are a ÷ b of the values: for memory and latency below 1× is better",
           "for a, for deliveries/s above 1×. Each measure ran every server in turn, a",
           "fresh server per run; the load generator shares the cores with the server.", ""]

    # 1. Idle memory.
    mem = {s: idle(run_dir, s) for s in engines}
    out["idle"] = mem
    counts = sorted({c for m in mem.values() for c in m})
    md += ["## 1. Idle memory per connection", "",
           "User-space RSS growth of the engine process over the connections "
           "(`idle_memory`: each connection its own user, idle after `connect`). "
           "The kernel's socket memory is not in it.", ""]
    md.append("| connections | " + " | ".join(engines) + " | after/before |")
    md.append("|---|" + "---|" * (len(engines) + 1))
    for c in counts:
        vals = [mem[s].get(c, {}).get("bytes_per_connection") for s in engines]
        md.append(f"| {c:,} | " + " | ".join(f"{num(v)} B" if v is not None else "—" for v in vals) + " | "
                  + ratio(mem.get("after", {}).get(c, {}).get("bytes_per_connection"),
                          mem.get("before", {}).get(c, {}).get("bytes_per_connection")) + " |")
    md.append("")

    # 2. and 3. Fixed rate, with the floor.
    sizes = [int(n) for n in params.get("LATENCY_SIZES", "").split()]
    rate_total = float(params.get("LATENCY_DELIVERIES_PER_S", 0) or 0)
    md += ["## 2. Fan-out at a fixed rate", ""]
    for n in sizes:
        run = f"fanout-latency-{n}"
        rows = {s: fan(run_dir, s, run) for s in servers}
        floor_stats = load(os.path.join(run_dir, "floor", f"{run}.floor.json"))
        out["latency"][n] = rows
        out["floor"][n] = floor_stats
        g = lambda s, k: (rows.get(s) or {}).get(k)
        md += [f"### {n:,} subscribers, {rate_total / n:.3g} publications/s "
               f"({rate_total:,.0f} deliveries/s offered) for {params.get('LATENCY_SECONDS')} s", "",
               "Latency from each publication's intended send time to its receipt, ms.", ""]
        cols = servers + ["after/before", "before/nchan", "after/nchan"]
        md.append("| measure | " + " | ".join(cols) + " |")
        md.append("|---|" + "---|" * len(cols))
        for label, key, fmt in (("p50 ms", "p50_us", ms), ("p99 ms", "p99_us", ms), ("p999 ms", "p999_us", ms),
                                ("max ms", "max_us", ms)):
            md.append(f"| {label} | " + " | ".join(fmt(g(s, key)) for s in servers) + " | "
                      + " | ".join([ratio(g("after", key), g("before", key)), ratio(g("before", key), g("nchan", key)),
                                    ratio(g("after", key), g("nchan", key))]) + " |")
        for label, key, fmt in (("subscribed", "subscribed", num), ("published", "published", num),
                                ("lost", "lost", num), ("errors", "errors_total", num),
                                ("client cores busy (whole run)", "client_cores_busy", cores),
                                ("server CPU-s (whole run)", "server_cpu_s", cores)):
            md.append(f"| {label} | " + " | ".join(fmt(g(s, key)) for s in servers) + " | — | — | — |")
        md.append("")

    md += ["## 3. Kernel floor", "",
           "`kernel_floor` (benches/src/bin/kernel_floor.rs): one thread writes each publication as "
           f"one {params.get('FLOOR_FRAME_BYTES', 64)}-byte frame to every subscriber with a plain "
           "blocking `send` loop and nothing else, driven by the same load generator, schedule and "
           "sockets as the engines (the `floor` column above). *Loop* is the loop itself, timed "
           "inside the floor on those sockets: one round = every subscriber written once. "
           "Multiples: engine ÷ floor end to end (same client, the comparable figure) and "
           "engine ÷ the loop's round time.", ""]
    md.append("| subscribers | floor loop round p50 / p99 ms | floor loop ns per send (p50) | floor end-to-end p50 / p99 ms | "
              + " | ".join(f"{s} p50 ÷ floor p50 | {s} p99 ÷ floor p99 | {s} p99 ÷ loop p99" for s in engines) + " |")
    md.append("|---|---|---|---|" + "---|---|---|" * len(engines))
    for n in sizes:
        f = out["floor"].get(n) or {}
        rows = out["latency"].get(n) or {}
        fl = rows.get("floor") or {}
        rnd = f.get("round_ns") or {}
        loop_p99_us = rnd.get("p99") / 1000 if rnd.get("p99") else None
        cells = [f"{n:,}",
                 f"{rnd.get('p50', 0) / 1e6:.2f} / {rnd.get('p99', 0) / 1e6:.2f}" if rnd else "—",
                 num((f.get("per_socket_ns") or {}).get("p50")) if f else "—",
                 f"{ms(fl.get('p50_us'))} / {ms(fl.get('p99_us'))}" if fl else "—"]
        for s in engines:
            e = rows.get(s) or {}
            cells += [ratio(e.get("p50_us"), fl.get("p50_us")), ratio(e.get("p99_us"), fl.get("p99_us")),
                      ratio(e.get("p99_us"), loop_p99_us)]
        md.append("| " + " | ".join(cells) + " |")
    md.append("")
    for n in sizes:
        f = out["floor"].get(n)
        if f:
            md.append(f"- {n:,}: {f.get('rounds')} rounds over {f.get('subscribers_min'):,}–{f.get('subscribers_max'):,} "
                      f"subscribers, mean {f.get('send_ns_mean'):,} ns per send, {f.get('sends_blocked')} sends "
                      f"blocked, {f.get('send_errors')} failed.")
    md.append("")

    # 4. Closed loop.
    rows = {s: fan(run_dir, s, "fanout-throughput") for s in engines}
    out["throughput"] = rows
    g = lambda s, k: (rows.get(s) or {}).get(k)
    md += ["## 4. Fan-out, closed loop", "",
           f"{params.get('THROUGHPUT_CONNECTIONS')} subscribers, `--rate=0 --window={params.get('WINDOW')}`, "
           f"{params.get('THROUGHPUT_PUBLICATIONS')} publications or {params.get('THROUGHPUT_SECONDS')} s. "
           "Deliveries/s: received over first publication to last delivery.", ""]
    md.append("| measure | " + " | ".join(engines) + " | after/before |")
    md.append("|---|" + "---|" * (len(engines) + 1))
    for label, key, fmt, with_ratio in (("deliveries / s", "deliveries_per_s", num, True),
                                        ("published", "published", num, False), ("lost", "lost", num, False),
                                        ("p50 ms (from the actual send)", "p50_us", ms, True), ("p99 ms", "p99_us", ms, True),
                                        ("client cores busy (whole run)", "client_cores_busy", cores, False),
                                        ("server CPU-s (whole run)", "server_cpu_s", cores, True)):
        md.append(f"| {label} | " + " | ".join(fmt(g(s, key)) for s in engines) + " | "
                  + (ratio(g("after", key), g("before", key)) if with_ratio else "—") + " |")
    md.append("")

    # 5. Chat.
    rows = {s: fan(run_dir, s, "chat") for s in engines}
    out["chat"] = rows
    g = lambda s, k: (rows.get(s) or {}).get(k)
    md += ["## 5. Chat", "",
           f"{params.get('CHAT_CONNECTIONS')} users, {params.get('CHAT_RATE')} messages/s each for "
           f"{params.get('CHAT_SECONDS')} s, pair share {params.get('CHAT_PAIR_SHARE')}, groups of "
           f"{params.get('CHAT_GROUP_SIZE')} on `room` (pairs go through the users' durable inboxes). "
           "*expected* counts the recipients of every accepted message (1 per pair message, the "
           "subscribed members of the group per group message), so delivered = expected with no "
           "duplicates means every accepted message reached exactly its recipients.", ""]
    md.append("| measure | " + " | ".join(engines) + " | after/before |")
    md.append("|---|" + "---|" * (len(engines) + 1))
    for label, key, fmt, with_ratio in (("messages sent", "sent", num, False), ("accepted (acked)", "published", num, True),
                                        ("refused", "publish_errors", num, False),
                                        ("deliveries expected", "expected", num, False), ("delivered", "received", num, True),
                                        ("lost", "lost", num, False), ("duplicated", "duplicated", num, False),
                                        ("out of order", "out_of_order", num, False), ("errors", "errors_total", num, False),
                                        ("push p50 ms", "p50_us", ms, True), ("push p99 ms", "p99_us", ms, True),
                                        ("client cores busy (whole run)", "client_cores_busy", cores, False),
                                        ("server CPU-s (whole run)", "server_cpu_s", cores, True)):
        md.append(f"| {label} | " + " | ".join(fmt(g(s, key)) for s in engines) + " | "
                  + (ratio(g("after", key), g("before", key)) if with_ratio else "—") + " |")
    for label, q in (("ack p50 ms", "p50_us"), ("ack p99 ms", "p99_us")):
        md.append(f"| {label} | " + " | ".join(ms((g(s, "ack") or {}).get(q)) for s in engines) + " | "
                  + ratio((g("after", "ack") or {}).get(q), (g("before", "ack") or {}).get(q)) + " |")
    cells = []
    for s in engines:
        r = rows.get(s)
        if not r:
            cells.append("—")
        elif r.get("received") == r.get("expected") and not r.get("duplicated"):
            cells.append("**yes**")
        else:
            cells.append(f"**no** ({num(r.get('received'))} of {num(r.get('expected'))}, {num(r.get('duplicated'))} duplicated)")
    md.append("| delivered = expected, no duplicates | " + " | ".join(cells) + " | — |")
    errs = {s: (rows.get(s) or {}).get("errors") for s in engines if (rows.get(s) or {}).get("errors")}
    if errs:
        md += ["", "Chat errors by kind: " + "; ".join(f"{s}: {json.dumps(e)}" for s, e in errs.items())]
    md.append("")

    md += ["## Runs", "", "| server | run | status |", "|---|---|---|"]
    md += [f"| {r[0]} | {r[1]} | {r[2] if len(r) > 2 else '?'} |" for r in runs]
    text = "\n".join(md) + "\n"
    with open(os.path.join(run_dir, "summary.md"), "w") as f:
        f.write(text)
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(out, f, indent=1, default=str)
    print(text)


if __name__ == "__main__":
    main()
