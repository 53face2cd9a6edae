#!/usr/bin/env python3
"""Reads a benches/cluster.sh results directory and writes summary.json and
README.md (the tables): the cluster against one process per scenario, bytes
on NATS per publication, same-node against cross-node latency.

usage: cluster-summary.py DIR
"""

import json
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def lat(latency):
    if not latency:
        return None
    return {k: latency.get(k) for k in ("count", "p50_us", "p99_us", "p999_us", "max_us")}


def ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return round(a / b, 3)


def nats_delta(before, after):
    """What crossed NATS between two snapshots: nats-server's /varz, the
    tap's counts per subject class, and the nodes' own cluster counters."""
    if not before or not after:
        return None
    out = {}
    vb, va = before.get("varz") or {}, after.get("varz") or {}
    for key in ("in_msgs", "in_bytes", "out_msgs", "out_bytes"):
        if key in va and key in vb:
            out["varz_" + key] = va[key] - vb[key]
    tb, ta = before.get("tap") or {}, after.get("tap") or {}
    classes = {}
    for cls, counts in ta.items():
        prev = tb.get(cls, {"msgs": 0, "bytes": 0})
        d = {"msgs": counts["msgs"] - prev["msgs"], "bytes": counts["bytes"] - prev["bytes"]}
        if d["msgs"]:
            classes[cls] = d
    out["subjects"] = classes
    # The tap is a subscriber too: nats-server's out counts its copy.
    tap_msgs = sum(c["msgs"] for c in classes.values())
    tap_bytes = sum(c["bytes"] for c in classes.values())
    if "varz_out_bytes" in out:
        out["varz_out_bytes_to_nodes"] = out["varz_out_bytes"] - tap_bytes
        out["varz_out_msgs_to_nodes"] = out["varz_out_msgs"] - tap_msgs

    def node_sum(snap, key):
        return sum((n.get("cluster") or {}).get(key, 0) for n in (snap.get("stats") or {}).get("nodes", []))

    for key in ("pushes_out", "messages_out", "bytes_out", "pushes_in", "pushes_unwanted", "dropped",
                "requests", "request_errors"):
        out["nodes_" + key] = node_sum(after, key) - node_sum(before, key)
    return out


def per_pub(run, publications):
    """Bytes on NATS per publication. `rc.c` carries publications and
    nothing else, so the tap's count of it is exact; nats-server counts
    payload bytes in `in_bytes`/`out_bytes`, so a publication costs its
    `rc.c` payload once in and once per receiving node out. The nodes'
    `bytes_out` also counts everything else they publish (heartbeats, the
    user directory's registrations at connect and disconnect, `rc.s`)."""
    if not run or not publications:
        return None
    c = run["subjects"].get("rc.c", {"msgs": 0, "bytes": 0})
    pushes_out, pushes_in = run.get("nodes_pushes_out") or 0, run.get("nodes_pushes_in") or 0
    res = {
        "publications": publications,
        "rc_c_msgs": c["msgs"],
        "rc_c_payload_bytes_per_publication": round(c["bytes"] / publications, 1),
        "nodes_pushes_out": pushes_out,
        "nodes_pushes_in": pushes_in,
        "receiving_nodes_per_push": round(pushes_in / pushes_out, 2) if pushes_out else None,
        "varz_in_bytes_per_publication": round(run.get("varz_in_bytes", 0) / publications, 1),
        "varz_out_bytes_to_nodes_per_publication": round(run.get("varz_out_bytes_to_nodes", 0) / publications, 1),
    }
    if pushes_out:
        res["nodes_bytes_out_per_push_out"] = round(run["nodes_bytes_out"] / pushes_out, 1)
        res["rc_c_payload_bytes_per_push"] = round(c["bytes"] / pushes_out, 1)
        res["rc_c_out_bytes_per_push"] = round(c["bytes"] / pushes_out * pushes_in / pushes_out, 1)
    s_ = run["subjects"].get("rc.s")
    if s_:
        res["rc_s_msgs"], res["rc_s_bytes"] = s_["msgs"], s_["bytes"]
    return res


def memory(d, label):
    idle, held = load(f"{d}/{label}-connect-idle-mem.json"), load(f"{d}/{label}-connect-held-mem.json")
    snap = load(f"{d}/{label}-connect-held.json")
    if not held or not snap:
        return None
    stats = snap.get("stats") or {}
    nodes = stats.get("nodes") or [stats]
    per_node = [{"node": n.get("node"), "connections": n.get("connections")} for n in nodes]
    held_total = stats.get("cluster_connections", stats.get("connections", 0))

    def rss(m, kind):
        return [p["rss_kb"] for p in (m or {}).get("processes", []) if p["kind"] == kind]

    engines_held, engines_idle = rss(held, "engine"), rss(idle, "engine")
    res = {
        "held": held_total,
        "per_node": per_node,
        "engine_rss_kb_held": engines_held,
        "engine_rss_kb_idle": engines_idle,
        "nats_rss_kb": sum(rss(held, "nats")),
        "loadgen_rss_kb": sum(rss(held, "loadgen")),
    }
    if held_total:
        res["engine_bytes_per_conn"] = round(
            (sum(engines_held) - sum(engines_idle)) * 1024 / held_total)
        tcp_h, tcp_i = (held.get("tcp") or {}), ((idle or {}).get("tcp") or {})
        if "mem" in tcp_h and "mem" in tcp_i:
            # Both ends are on this host: the kernel's TCP buffers of a
            # client socket and a server socket.
            res["kernel_tcp_bytes_per_conn_both_ends"] = round(
                (tcp_h["mem"] - tcp_i["mem"]) * 4096 / held_total)
        slab_h = held["meminfo_kb"]["Slab"]
        slab_i = (idle or held)["meminfo_kb"]["Slab"]
        res["kernel_slab_bytes_per_conn_both_ends"] = round((slab_h - slab_i) * 1024 / held_total)
        res["loadgen_bytes_per_conn"] = round(res["loadgen_rss_kb"] * 1024 / held_total)
    return res


def run_summary(d, label, name, seconds=None):
    r = load(f"{d}/{label}-{name}.json")
    if not r:
        return None
    res = {
        "connections": r["connections"],
        "connected": r["connected"],
        "subscribed": r.get("subscribed"),
        "published": r.get("published"),
        "sent": r.get("sent"),
        "expected": r["expected"],
        "received": r["received"],
        "lost": r["lost"],
        "duplicated": r["duplicated"],
        "out_of_order": r["out_of_order"],
        "errors_total": r.get("errors_total"),
        "deliveries_per_s": round(r.get("deliveries_per_s") or 0),
        "push": lat(r.get("push_latency")),
        "connect": lat(r.get("connect_latency")),
        "ack": lat(r.get("ack_latency")),
        "client_cores_busy": (r.get("client") or {}).get("cores_busy"),
    }
    if name in ("chat", "imchat") and seconds and res["ack"]:
        # Every user sends on a schedule over `seconds`: acks/s over it.
        res["acks_per_s"] = round(res["ack"]["count"] / seconds)
    return res


def main():
    d = sys.argv[1]
    params = load(f"{d}/params.json") or {}
    summary = {"params": params}

    # connect
    conn = {}
    for label in ("cluster", "single"):
        r = load(f"{d}/{label}-connect.json")
        if r:
            conn[label] = {"asked": r["connections"], "connected": r["connected"],
                           "connect": lat(r.get("connect_latency")), "errors_total": r.get("errors_total"),
                           "memory": memory(d, label)}
    if conn:
        summary["connect"] = conn

    # fanout and chat, with NATS bytes
    for scenario, before_after in (
        ("fanout-fixed", ("fanout-before", "fanout-fixed-after")),
        ("fanout-closed", ("fanout-fixed-after", "fanout-closed-after")),
        ("chat", ("chat-before", "chat-after")),
        ("imchat", ("imchat-before", "imchat-after")),
    ):
        entry = {}
        seconds = params.get("imchat_seconds" if scenario == "imchat" else "chat_seconds")
        for label in ("cluster", "single"):
            s = run_summary(d, label, scenario, seconds)
            if s:
                entry[label] = s
        if not entry:
            continue
        c, s = entry.get("cluster"), entry.get("single")
        if c and s:
            entry["ratio_cluster_over_single"] = {
                "deliveries_per_s": ratio(c["deliveries_per_s"], s["deliveries_per_s"]),
                "push_p99": ratio((c["push"] or {}).get("p99_us"), (s["push"] or {}).get("p99_us")),
                "ack_p99": ratio((c["ack"] or {}).get("p99_us"), (s["ack"] or {}).get("p99_us")),
                "acks_per_s": ratio(c.get("acks_per_s"), s.get("acks_per_s")),
            }
        before, after = (load(f"{d}/cluster-{name}.json") for name in before_after)
        delta_run = nats_delta(before, after)
        if delta_run and c:
            entry["nats"] = delta_run
            pubs = c["published"] if scenario.startswith("fanout") else c["sent"]
            entry["nats_per_publication"] = per_pub(delta_run, pubs)
            if scenario in ("chat", "imchat") and c["sent"] and delta_run:
                entry["nats_bytes_per_message_by_subject"] = {
                    cls: round(v["bytes"] / c["sent"], 1) for cls, v in delta_run["subjects"].items()}
        summary[scenario] = entry

    # latency
    rounds = {"same": [], "cross": []}
    for name in rounds:
        for i in range(1, 10):
            r = load(f"{d}/latency-{name}-{i}.json")
            if r:
                rounds[name].append({"round": i, "published": r["published"], "lost": r["lost"],
                                     "push": lat(r["push_latency"])})
    if rounds["same"] and rounds["cross"]:
        def mean(name, key):
            vals = [x["push"][key] for x in rounds[name]]
            return sum(vals) / len(vals)
        overhead = {k: round(mean("cross", k) - mean("same", k)) for k in ("p50_us", "p99_us", "p999_us")}
        summary["latency"] = {"same": rounds["same"], "cross": rounds["cross"],
                              "mean_same": {k: round(mean("same", k)) for k in ("p50_us", "p99_us", "p999_us")},
                              "mean_cross": {k: round(mean("cross", k)) for k in ("p50_us", "p99_us", "p999_us")},
                              "overhead_us": overhead}

    with open(f"{d}/summary.json", "w") as f:
        json.dump(summary, f, indent=1)
    with open(f"{d}/README.md", "w") as f:
        f.write(readme(summary))
    print(readme(summary))


def fmt(v, unit=""):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.2f}{unit}"
    return f"{v:,}{unit}"


def ms(v):
    return "n/a" if v is None else f"{v / 1000:.2f} ms"


def readme(s):
    p = s["params"]
    lines = [
        "# Cluster on one host (benches/cluster.sh)",
        "",
        f"{p.get('date')}, commit {p.get('commit')}, {p.get('host_cores')} cores; "
        f"{p.get('nodes')} nodes (`server.shards = {p.get('shards')}`, `cluster.stores = {p.get('nodes')}`) "
        "on one WebSocket and one API port, one nats-server; the baseline is one engine process "
        "without `[cluster]` on the same ports, same load, same run. Host settings: host.txt; "
        "raw figures: summary.json and the loadgen's `*.json`/`*.log` beside it.",
        "",
    ]
    if "connect" in s:
        lines += ["## Connect and hold", "",
                  "| | asked | held (from /api/stats) | per node | connect p50 / p99 | engine RSS per process held | engine B/conn | kernel slab B/conn (both ends) | loadgen B/conn |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for label, c in s["connect"].items():
            m = c["memory"] or {}
            per_node = ", ".join(str(n["connections"]) for n in m.get("per_node", []))
            rss = ", ".join(f"{kb / 1024:.0f}" for kb in m.get("engine_rss_kb_held", []))
            lines.append(
                f"| {label} | {fmt(c['asked'])} | {fmt(m.get('held'))} | {per_node} | "
                f"{ms((c['connect'] or {}).get('p50_us'))} / {ms((c['connect'] or {}).get('p99_us'))} | "
                f"{rss} MiB | {fmt(m.get('engine_bytes_per_conn'))} | "
                f"{fmt(m.get('kernel_slab_bytes_per_conn_both_ends'))} | {fmt(m.get('loadgen_bytes_per_conn'))} |")
        lines += ["", "engine B/conn: the engines' RSS while held less before, over the connections held. "
                  "Kernel: the growth of /proc/meminfo `Slab` over the connections; both ends of each "
                  "connection live on this host (the client's socket and the server's), so a server "
                  "alone pays about half. Idle sockets hold no buffers: /proc/net/sockstat's TCP `mem` "
                  "stays near 0 (in summary.json).", ""]
    for scenario, title in (("fanout-fixed", "Fan-out at a fixed rate"),
                            ("fanout-closed", "Fan-out, closed loop"),
                            ("chat", "Chat: pairs (`send`, durable inbox) and groups (client `publish`)"),
                            ("imchat", "IM direct messages (`msg_send` through the IM partition's owner, node 0)")):
        e = s.get(scenario)
        if not e:
            continue
        lines += [f"## {title}", "",
                  "| | connections | published / sent | expected | received | lost | dup | deliveries/s | push p50 / p99 / p99.9 | acks/s | ack p50 / p99 |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for label in ("cluster", "single"):
            r = e.get(label)
            if not r:
                continue
            push, ack = r["push"] or {}, r["ack"] or {}
            lines.append(
                f"| {label} | {fmt(r['connected'])} | {fmt(r['published'] or r['sent'])} | {fmt(r['expected'])} | "
                f"{fmt(r['received'])} | {fmt(r['lost'])} | {fmt(r['duplicated'])} | {fmt(r['deliveries_per_s'])} | "
                f"{ms(push.get('p50_us'))} / {ms(push.get('p99_us'))} / {ms(push.get('p999_us'))} | "
                f"{fmt(r.get('acks_per_s'))} | "
                f"{ms(ack.get('p50_us')) if ack.get('count') else 'n/a'} / {ms(ack.get('p99_us')) if ack.get('count') else 'n/a'} |")
        rt = e.get("ratio_cluster_over_single")
        if rt:
            lines.append("")
            lines.append(f"Cluster / single: deliveries/s {fmt(rt['deliveries_per_s'])}, push p99 "
                         f"{fmt(rt['push_p99'])}" + (f", acks/s {fmt(rt['acks_per_s'])}, ack p99 {fmt(rt['ack_p99'])}" if rt.get("ack_p99") else "") + ".")
        n = e.get("nats_per_publication")
        if n and scenario not in ("chat", "imchat"):
            lines.append("")
            lines.append(
                f"NATS, over the scenario ({fmt(n['publications'])} publications or messages; connections "
                f"opened and closed inside it): `rc.c` (channel publications, nothing else) "
                f"{fmt(n['rc_c_msgs'])} NATS messages, {fmt(n.get('rc_c_payload_bytes_per_push'))} B of payload "
                f"per push into nats-server, received by {fmt(n.get('receiving_nodes_per_push'))} nodes each "
                f"(`pushes_in / pushes_out`): {fmt(n.get('rc_c_out_bytes_per_push'))} B out per push. "
                f"The nodes' `bytes_out / pushes_out`: {fmt(n.get('nodes_bytes_out_per_push_out'))} B, and "
                f"nats-server's `/varz` in {fmt(n['varz_in_bytes_per_publication'])} B / out to the nodes "
                f"{fmt(n['varz_out_bytes_to_nodes_per_publication'])} B per publication: these count all "
                f"traffic, mostly the user directory's registrations (`rc.s`: {fmt(n.get('rc_s_msgs'))} messages, "
                f"{fmt(n.get('rc_s_bytes'))} B) at connect and close, and heartbeats.")
        byc = e.get("nats_bytes_per_message_by_subject")
        if byc:
            subjects = e["nats"]["subjects"]
            lines.append("")
            per = ", ".join(f"`{k}` {v} ({fmt(subjects[k]['msgs'])})" for k, v in sorted(byc.items()))
            if scenario == "imchat":
                lines.append(
                    f"NATS over the scenario ({fmt(n['publications'])} DMs sent, and a `read` every 5; "
                    "connections opened and closed inside it), payload bytes per DM by subject (messages on "
                    f"it): {per}. `rc.s`: IM calls to the IM partition's owner (appends, reads) and the user "
                    "directory's registrations; `_INBOX`: their answers; `rc.i`: entries and IM events from "
                    "the owner to the recipients' nodes.")
            else:
                lines.append(
                    f"NATS over the scenario ({fmt(n['publications'])} messages sent, half `send`, half group "
                    "`publish`; connections opened and closed inside it), payload bytes per message sent by "
                    f"subject (messages on it): {per}. `rc.c`: group publications; `rc.n`: inbox entries to "
                    "the recipient's node; `rc.s`: appends forwarded to the inbox's owner and the user "
                    "directory's registrations; `_INBOX`: their replies. Nodes receiving each push: "
                    f"{fmt(n.get('receiving_nodes_per_push'))}.")
        lines.append("")
    lat_ = s.get("latency")
    if lat_:
        lines += ["## Same-node against cross-node delivery", "",
                  f"{p.get('lat_subscribers')} subscribers all on node 0, {p.get('lat_rate')} publications/s for "
                  f"{p.get('lat_seconds')} s, published through node 0's API (same node) or node 1's (cross "
                  f"node: one hop through nats-server), alternating, {p.get('lat_rounds', 2)} rounds each.", "",
                  "| path | round | published | lost | p50 | p99 | p99.9 |", "|---|---|---|---|---|---|---|"]
        for name in ("same", "cross"):
            for r in lat_[name]:
                lines.append(f"| {name} | {r['round']} | {fmt(r['published'])} | {fmt(r['lost'])} | "
                             f"{ms(r['push']['p50_us'])} | {ms(r['push']['p99_us'])} | {ms(r['push']['p999_us'])} |")
        o, ms_, mc = lat_["overhead_us"], lat_["mean_same"], lat_["mean_cross"]
        lines += ["", f"Mean over rounds, same → cross: p50 {ms(ms_['p50_us'])} → {ms(mc['p50_us'])} "
                      f"(+{ms(o['p50_us'])}), p99 {ms(ms_['p99_us'])} → {ms(mc['p99_us'])} (+{ms(o['p99_us'])}), "
                      f"p99.9 {ms(ms_['p999_us'])} → {ms(mc['p999_us'])} (+{ms(o['p999_us'])}).", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
