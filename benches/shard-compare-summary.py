#!/usr/bin/env python3
"""The summary of one benches/shard-compare.sh run. Reads the run directory
(meta.json, and per pass pass-<k>/: runs.tsv, each server's load generator
JSON, idle_memory CSV and kernel_floor stats), writes summary.md and
summary.json there and pass-<k>/summary.md for each pass, and prints the
run's summary.md. Standard library only; it measures nothing itself.

    shard-compare-summary.py RUN_DIR [ELAPSED_S]

Every figure in the run's summary is the median over the passes; ratios are
quotients of those medians (a ÷ b): for memory and latency below 1x is
better for a, for deliveries/s above 1x is. The "Spread" section gives the
per-pass ratios, so run-to-run noise is visible next to each result.
"""

import csv
import glob
import json
import os
import statistics
import sys


# One results-file reader for both scripts.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "compare"))
from compare import load  # noqa: E402


def ratio(a, b):
    if a is None or b in (None, 0):
        return "—"
    return f"{a / b:.2f}×"


def ms(us):
    if us is None:
        return "—"
    if us < 10_000:
        return f"{us / 1000:.2f}"
    return f"{us / 1000:.1f}" if us < 1_000_000 else f"{us / 1000:,.0f}"


def num(v):
    return "—" if v is None else f"{v:,.0f}"


def cores(v):
    return "—" if v is None else f"{v:.2f}"


# ---------------------------------------------------------------- collect
def idle(pass_dir, server):
    """idle_memory's CSV lines: connections,rss_bytes,rss_growth_bytes,bytes_per_connection."""
    out = {}
    try:
        with open(os.path.join(pass_dir, server, "idle-memory.csv")) as f:
            for row in csv.reader(f):
                if len(row) == 4 and row[0].isdigit():
                    out[row[0]] = {"rss_bytes": int(row[1]), "growth_bytes": int(row[2]),
                                   "bytes_per_connection": int(row[3])}
    except OSError:
        pass
    return out


def fan(pass_dir, server, run):
    s = load(os.path.join(pass_dir, server, f"{run}.json"))
    if not s:
        return None
    push = s.get("push_latency") or {}
    ack = s.get("ack_latency") or {}
    srv = load(os.path.join(pass_dir, server, f"{run}.server.json")) or {}
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
        "errors": s.get("errors") or {},
        "sent": s.get("sent"),
        "p50_us": push.get("p50_us"),
        "p99_us": push.get("p99_us"),
        "p999_us": push.get("p999_us"),
        "max_us": push.get("max_us"),
        "ack_p50_us": ack.get("p50_us"),
        "ack_p99_us": ack.get("p99_us"),
        "deliveries_per_s": s.get("deliveries_per_s"),
        "client_cores_busy": (s.get("client") or {}).get("cores_busy"),
        "server_cpu_s": srv.get("server_cpu_s"),
        "elapsed_s": s.get("elapsed_s"),
    }


def collect(pass_dir, params):
    servers = params.get("SERVERS", "before after floor nchan").split()
    engines = [s for s in servers if s in ("before", "after")]
    sizes = params.get("LATENCY_SIZES", "").split()
    runs = []
    try:
        with open(os.path.join(pass_dir, "runs.tsv")) as f:
            runs = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    except OSError:
        pass
    return {
        "runs": runs,
        "idle": {s: idle(pass_dir, s) for s in engines},
        "latency": {n: {s: fan(pass_dir, s, f"fanout-latency-{n}") for s in servers} for n in sizes},
        "floor": {n: load(os.path.join(pass_dir, "floor", f"fanout-latency-{n}.floor.json")) for n in sizes},
        "throughput": {s: fan(pass_dir, s, "fanout-throughput") for s in engines},
        "chat": {s: fan(pass_dir, s, "chat") for s in engines},
    }


def median_of(values):
    """The median of the passes' values, recursively through dicts."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    if all(isinstance(v, dict) for v in present):
        keys = sorted({k for v in present for k in v})
        return {k: median_of([v.get(k) for v in present]) for k in keys}
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return statistics.median(present)
    return present[0]


# ---------------------------------------------------------------- render
def render(data, params, engines, servers, head, spread=None):
    md = list(head)
    sizes = params.get("LATENCY_SIZES", "").split()
    rate_total = float(params.get("LATENCY_DELIVERIES_PER_S", 0) or 0)

    mem = data["idle"]
    counts = sorted({c for m in mem.values() if m for c in m}, key=int)
    md += ["## 1. Idle memory per connection", "",
           "User-space RSS growth of the engine process over the connections "
           "(`idle_memory`: each connection its own user, idle after `connect`). "
           "The kernel's socket memory is not in it.", ""]
    md.append("| connections | " + " | ".join(engines) + " | after/before |")
    md.append("|---|" + "---|" * (len(engines) + 1))
    per = lambda s, c: ((mem.get(s) or {}).get(c) or {}).get("bytes_per_connection")
    for c in counts:
        md.append(f"| {int(c):,} | " + " | ".join(f"{num(per(s, c))} B" if per(s, c) is not None else "—" for s in engines)
                  + " | " + ratio(per("after", c), per("before", c)) + " |")
    md.append("")

    md += ["## 2. Fan-out at a fixed rate", ""]
    for n in sizes:
        rows = data["latency"].get(n) or {}
        g = lambda s, k: (rows.get(s) or {}).get(k)
        md += [f"### {int(n):,} subscribers, {rate_total / int(n):.3g} publications/s "
               f"({rate_total:,.0f} deliveries/s offered) for {params.get('LATENCY_SECONDS')} s", "",
               "Latency from each publication's intended send time to its receipt, ms.", ""]
        cols = servers + ["after/before", "before/nchan", "after/nchan"]
        md.append("| measure | " + " | ".join(cols) + " |")
        md.append("|---|" + "---|" * len(cols))
        for label, key in (("p50 ms", "p50_us"), ("p99 ms", "p99_us"), ("p999 ms", "p999_us"), ("max ms", "max_us")):
            md.append(f"| {label} | " + " | ".join(ms(g(s, key)) for s in servers) + " | "
                      + " | ".join([ratio(g("after", key), g("before", key)), ratio(g("before", key), g("nchan", key)),
                                    ratio(g("after", key), g("nchan", key))]) + " |")
        for label, key, fmt in (("subscribed", "subscribed", num), ("published", "published", num),
                                ("lost", "lost", num), ("errors", "errors_total", num),
                                ("client cores busy (whole run)", "client_cores_busy", cores),
                                ("server CPU-s (whole run)", "server_cpu_s", cores)):
            md.append(f"| {label} | " + " | ".join(fmt(g(s, key)) for s in servers) + " | — | — | — |")
        md.append("")

    md += ["## 3. Kernel floor", "",
           "`kernel_floor` (`benches/src/bin/kernel_floor.rs`): one thread writes each publication as "
           f"one {params.get('FLOOR_FRAME_BYTES', 64)}-byte frame to every subscriber with a plain "
           "blocking `send` loop and nothing else, driven by the same load generator, schedule and "
           "sockets as the engines (the `floor` column above). *Loop* is that loop timed inside the "
           "floor on those sockets: one round = every subscriber written once. The multiples: "
           "engine ÷ floor end to end (same client, same path: the figure to quote) and "
           "engine p99 ÷ the loop's p99 round time (the kernel's share alone).", ""]
    md.append("| subscribers | loop round p50 / p99 ms | loop ns per send (p50) | floor end to end p50 / p99 ms | "
              + " | ".join(f"{s} p50 ÷ floor p50 | {s} p99 ÷ floor p99 | {s} p99 ÷ loop p99" for s in engines) + " |")
    md.append("|---|---|---|---|" + "---|---|---|" * len(engines))
    for n in sizes:
        f = data["floor"].get(n) or {}
        rows = data["latency"].get(n) or {}
        fl = rows.get("floor") or {}
        rnd = f.get("round_ns") or {}
        loop_p99_us = rnd["p99"] / 1000 if rnd.get("p99") else None
        cells = [f"{int(n):,}",
                 f"{rnd['p50'] / 1e6:.1f} / {rnd['p99'] / 1e6:.1f}" if rnd else "—",
                 num((f.get("per_socket_ns") or {}).get("p50")) if f else "—",
                 f"{ms(fl.get('p50_us'))} / {ms(fl.get('p99_us'))}" if fl else "—"]
        for s in engines:
            e = rows.get(s) or {}
            cells += [ratio(e.get("p50_us"), fl.get("p50_us")), ratio(e.get("p99_us"), fl.get("p99_us")),
                      ratio(e.get("p99_us"), loop_p99_us)]
        md.append("| " + " | ".join(cells) + " |")
    md.append("")
    for n in sizes:
        f = data["floor"].get(n)
        if f:
            md.append(f"- {int(n):,} subscribers: {num(f.get('rounds'))} rounds, mean {num(f.get('send_ns_mean'))} ns "
                      f"per send, {num(f.get('sends_blocked'))} sends blocked, {num(f.get('send_errors'))} failed.")
    md.append("")

    rows = data["throughput"]
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

    rows = data["chat"]
    g = lambda s, k: (rows.get(s) or {}).get(k)
    md += ["## 5. Chat", "",
           f"{params.get('CHAT_CONNECTIONS')} users, {params.get('CHAT_RATE')} messages/s each for "
           f"{params.get('CHAT_SECONDS')} s, pair share {params.get('CHAT_PAIR_SHARE')}, groups of "
           f"{params.get('CHAT_GROUP_SIZE')} on `room` (pair messages go through the users' durable "
           "inboxes). *Expected* counts the recipients of every accepted message (1 per pair message, "
           "the subscribed members of the group per group message): delivered = expected with no "
           "duplicates means every accepted message reached exactly its recipients, and delivered "
           "above expected means refused messages were (partly) delivered.", ""]
    md.append("| measure | " + " | ".join(engines) + " | after/before |")
    md.append("|---|" + "---|" * (len(engines) + 1))
    for label, key, fmt, with_ratio in (("messages sent", "sent", num, False), ("accepted (acked)", "published", num, True),
                                        ("refused", "publish_errors", num, True),
                                        ("deliveries expected", "expected", num, False), ("delivered", "received", num, True),
                                        ("lost", "lost", num, False), ("duplicated", "duplicated", num, False),
                                        ("out of order", "out_of_order", num, False), ("errors", "errors_total", num, False),
                                        ("push p50 ms", "p50_us", ms, True), ("push p99 ms", "p99_us", ms, True),
                                        ("ack p50 ms", "ack_p50_us", ms, True), ("ack p99 ms", "ack_p99_us", ms, True),
                                        ("client cores busy (whole run)", "client_cores_busy", cores, False),
                                        ("server CPU-s (whole run)", "server_cpu_s", cores, True)):
        md.append(f"| {label} | " + " | ".join(fmt(g(s, key)) for s in engines) + " | "
                  + (ratio(g("after", key), g("before", key)) if with_ratio else "—") + " |")
    md.append("| delivered − expected | " + " | ".join(
        "—" if g(s, "received") is None or g(s, "expected") is None else f"{g(s, 'received') - g(s, 'expected'):+,.0f}"
        for s in engines) + " | — |")
    errs = {s: g(s, "errors") for s in engines if g(s, "errors")}
    if errs:
        md += ["", "Errors by kind (106 limit exceeded, 111 store unavailable; see "
               "`engine/protocol/src/client.rs` `ErrorCode`): "
               + "; ".join(f"{s}: " + ", ".join(f"{k} {num(v)}" for k, v in e.items()) for s, e in errs.items())]
    md.append("")

    if spread:
        md += spread
    return md


def chat_verdict(r):
    if not r or r.get("received") is None:
        return "—"
    extra = r["received"] - (r.get("expected") or 0)
    if extra == 0 and not r.get("duplicated"):
        return "yes"
    return f"no ({extra:+,} deliveries, {r.get('duplicated') or 0:,} duplicated)"


def spread_lines(passes, params, engines):
    """Per-pass after/before (and after/floor) ratios of the key figures."""
    if len(passes) < 1 or not {"before", "after"} <= set(engines):
        return []
    k = len(passes)
    md = ["## Spread over the passes", "",
          f"Each pass's own ratio, pass 1 to {k} (passes alternate the order of the servers); "
          "with the same binary as before and after these show the run-to-run noise.", "",
          "| figure | " + " | ".join(f"pass {i + 1}" for i in range(k)) + " |", "|---|" + "---|" * k]

    def row(label, get):
        md.append(f"| {label} | " + " | ".join(get(p) for p in passes) + " |")

    def pick(d, *keys):
        for key in keys:
            d = (d or {}).get(key)
        return d

    counts = sorted({c for p in passes for m in p["idle"].values() if m for c in m}, key=int)
    for c in counts:
        row(f"idle memory at {int(c):,}: after/before",
            lambda p, c=c: ratio(pick(p, "idle", "after", c, "bytes_per_connection"),
                                 pick(p, "idle", "before", c, "bytes_per_connection")))
    for n in params.get("LATENCY_SIZES", "").split():
        for q in ("p50_us", "p99_us"):
            row(f"{int(n):,} subscribers {q[:-3]}: after/before",
                lambda p, n=n, q=q: ratio(pick(p, "latency", n, "after", q), pick(p, "latency", n, "before", q)))
        for s in engines:
            row(f"{int(n):,} subscribers p99: {s}/floor",
                lambda p, n=n, s=s: ratio(pick(p, "latency", n, s, "p99_us"), pick(p, "latency", n, "floor", "p99_us")))
    row("closed loop deliveries/s: after/before",
        lambda p: ratio(pick(p, "throughput", "after", "deliveries_per_s"), pick(p, "throughput", "before", "deliveries_per_s")))
    row("chat delivered: after/before",
        lambda p: ratio(pick(p, "chat", "after", "received"), pick(p, "chat", "before", "received")))
    for s in engines:
        row(f"chat {s}: delivered = expected, no duplicates", lambda p, s=s: chat_verdict(pick(p, "chat", s)))
    md.append("")
    return md


def main():
    run_dir = sys.argv[1]
    elapsed = sys.argv[2] if len(sys.argv) > 2 else None
    meta = load(os.path.join(run_dir, "meta.json")) or {}
    params = meta.get("params", {})
    servers = params.get("SERVERS", "before after floor nchan").split()
    engines = [s for s in servers if s in ("before", "after")]
    pass_dirs = sorted(glob.glob(os.path.join(run_dir, "pass-*")), key=lambda p: int(p.rsplit("-", 1)[1]))
    if not pass_dirs:  # a run from before passes existed: the directory is the one pass
        pass_dirs = [run_dir]
    passes = [collect(d, params) for d in pass_dirs]

    head = [f"# Shard compare: before and after ({meta.get('date', '?')})", ""]
    head.append(f"Command: `{meta.get('command', '')}`" + (f", {elapsed} s in all." if elapsed else ""))
    head += ["", "Host: " + meta.get("host", "?"), ""]
    for name, b in (meta.get("binaries") or {}).items():
        head.append(f"- {name}: `{b.get('path')}` (sha256 {b.get('sha256')}…, {b.get('mtime')})")
    if meta.get("nchan"):
        head.append(f"- nchan: {meta['nchan']}")
    head += ["", "Parameters: " + ", ".join(f"{k}={v}" for k, v in params.items()), ""]

    for d, p in zip(pass_dirs, passes):
        if d == run_dir:
            continue
        pass_head = head + [f"One pass: `{os.path.basename(d)}` of {len(passes)}. Ratios are a ÷ b.", ""]
        runs = ["## Runs", "", "| server | run | status |", "|---|---|---|"]
        runs += [f"| {r[0]} | {r[1]} | {r[2] if len(r) > 2 else '?'} |" for r in p["runs"]]
        with open(os.path.join(d, "summary.md"), "w") as f:
            f.write("\n".join(render(p, params, engines, servers, pass_head, runs + [""])) + "\n")

    data = {key: median_of([p[key] for p in passes]) for key in ("idle", "latency", "floor", "throughput", "chat")}
    head += [f"Every figure is the median over {len(passes)} pass(es) (`pass-<k>/summary.md` has each), "
             "every ratio a ÷ b of those medians: for memory and latency below 1× is better for a, for "
             "deliveries/s above 1×. Each measure ran every server in turn, a fresh server per run; "
             "the load generator shares the cores with the servers.", ""]
    failed = [(i + 1, r) for i, p in enumerate(passes) for r in p["runs"] if len(r) > 2 and not r[2].startswith("ok")]
    runs = ["## Runs", ""]
    if failed:
        runs += [f"- pass {i}: {r[0]} {r[1]}: {r[2]}" for i, r in failed]
    else:
        runs.append(f"All {sum(len(p['runs']) for p in passes)} runs completed "
                    "(`ok; errors or losses`: the load generator counted refusals or losses, which are results).")
    md = render(data, params, engines, servers, head, spread_lines(passes, params, engines) + runs + [""])
    text = "\n".join(md) + "\n"
    with open(os.path.join(run_dir, "summary.md"), "w") as f:
        f.write(text)
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump({"meta": meta, "elapsed_s": elapsed, "median": data, "passes": passes}, f, indent=1, default=str)
    print(text)


if __name__ == "__main__":
    main()
