"""The self-contained HTML report of a benches/compare/run run: parameters,
host facts, versions, the table, summary charts and each server's CPU and
RSS timeline, all inline (CSS and SVG, no script, no network resource) so the
file reads offline and can be mailed or attached to an issue as it is.
Standard library only; used by compare.py (`table` writes it, `report`
rewrites it from a summary.json).
"""

import html
import math

# Okabe-Ito: told apart by colour-blind readers too.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]


def esc(s):
    return html.escape(str(s), quote=True)


# ---------------------------------------------------------------- units
def _trim(x):
    s = f"{x:.2f}" if abs(x) < 10 else (f"{x:.1f}" if abs(x) < 100 else f"{x:.0f}")
    return s.rstrip("0").rstrip(".") if "." in s else s


def fmt_rate(v):
    """Per second, with k/M: ticks read `1.6M/s`, not `1600000.0`."""
    if v is None:
        return "—"
    a = abs(v)
    if a >= 1e6:
        return _trim(v / 1e6) + "M/s"
    if a >= 1e3:
        return _trim(v / 1e3) + "k/s"
    return _trim(v) + "/s"


def fmt_bytes(v):
    """Decimal units, so a log axis's powers of ten read 1 kB, 10 kB, 100 kB."""
    if v is None:
        return "—"
    a = abs(v)
    if a >= 1e9:
        return _trim(v / 1e9) + " GB"
    if a >= 1e6:
        return _trim(v / 1e6) + " MB"
    if a >= 1e3:
        return _trim(v / 1e3) + " kB"
    return _trim(v) + " B"


def fmt_us(v):
    if v is None:
        return "—"
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6:
        return _trim(v / 1e6) + " s"
    if a >= 1e3:
        return _trim(v / 1e3) + " ms"
    return _trim(v) + " µs"


def fmt_pct(v):
    return "—" if v is None else _trim(v) + "%"


def fmt_secs(v):
    return _trim(v) + " s"


# ---------------------------------------------------------------- scales
def nice_step(span, n=5):
    raw = span / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def linear_ticks(hi, n=5):
    hi = hi if hi > 0 else 1
    step = nice_step(hi, n)
    top = math.ceil(hi / step) * step
    ticks, t = [], 0.0
    while t <= top + step / 2:
        ticks.append(t)
        t += step
    return ticks


def log_ticks(lo, hi):
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    if b == a:
        b += 1
    ticks = [10.0**e for e in range(a, b + 1)]
    if b - a <= 2:  # few decades: 2 and 5 between the powers of ten
        ticks = sorted({t * m for t in ticks for m in (1, 2, 5) if 10.0**a <= t * m <= 10.0**b})
    return ticks


def wants_log(values):
    """A log axis where the values span more than a decade and a half, so one
    server's 30 s does not flatten every other bar to zero."""
    pos = [v for v in values if v is not None and v > 0]
    return len(pos) >= 2 and max(pos) / min(pos) > 30


# ---------------------------------------------------------------- charts
def _legend(items, x, y, width):
    """Below the plot area, never over it; wraps to more rows."""
    out, cx, cy = [], x, y
    for name, colour in items:
        w = 22 + 7 * len(name)
        if cx + w > x + width and cx > x:
            cx, cy = x, cy + 18
        out.append(f'<rect x="{cx}" y="{cy - 9}" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{cx + 16}" y="{cy + 1}" class="lg">{esc(name)}</text>')
        cx += w
    return "".join(out), cy - y + 18


def bar_chart(cid, title, categories, series, fmt, y_label, marks=None, width=660):
    """Grouped bars: one group per category (server), one bar per series.
    `marks` maps a category to a word drawn above its group (`saturated`)."""
    marks = marks or {}
    values = [v for _, vals in series for v in vals if v is not None]
    log = wants_log(values)
    left, right, top, plot_h = 78, 16, 34, 220
    plot_w = width - left - right
    if not values:
        return (f'<figure id="{esc(cid)}" class="chart"><figcaption>{esc(title)}</figcaption>'
                f'<p class="empty">no server has this measure in this run</p></figure>')
    if log:
        pos = [v for v in values if v > 0]
        ticks = log_ticks(min(pos), max(pos))
        lo, hi = math.log10(ticks[0]), math.log10(ticks[-1])

        def ypos(v):
            v = max(v, ticks[0])
            return top + plot_h - (math.log10(v) - lo) / (hi - lo) * plot_h
    else:
        ticks = linear_ticks(max(values))

        def ypos(v):
            return top + plot_h - v / ticks[-1] * plot_h

    out = [f'<text x="{left}" y="18" class="tt">{esc(title)}</text>']
    for t in ticks:
        y = ypos(t)
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="yt">{esc(fmt(t))}</text>')
    axis_note = y_label + (" (log scale)" if log else "")
    out.append(f'<text transform="translate(14,{top + plot_h / 2}) rotate(-90)" class="al">{esc(axis_note)}</text>')
    group_w = plot_w / max(len(categories), 1)
    bar_w = min(40, group_w * 0.8 / max(len(series), 1))
    base = top + plot_h
    for i, cat in enumerate(categories):
        gx = left + i * group_w + (group_w - bar_w * len(series)) / 2
        tallest = base
        for j, (name, vals) in enumerate(series):
            v = vals[i]
            x = gx + j * bar_w
            if v is None:
                out.append(f'<text x="{x + bar_w / 2:.1f}" y="{base - 4}" class="na">—</text>')
                continue
            y = ypos(v) if v > 0 else base
            tallest = min(tallest, y)
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" height="{base - y:.1f}" '
                       f'fill="{PALETTE[j % len(PALETTE)]}"><title>{esc(cat)}, {esc(name)}: {esc(fmt(v))}</title></rect>')
        if cat in marks:
            out.append(f'<text x="{left + i * group_w + group_w / 2:.1f}" y="{max(tallest - 5, top - 2):.1f}" '
                       f'class="mark">{esc(marks[cat])}</text>')
        out.append(f'<text x="{left + i * group_w + group_w / 2:.1f}" y="{base + 16}" class="xt">{esc(cat)}</text>')
    out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{base}" y2="{base}" class="axis"/>')
    legend, legend_h = ("", 0)
    if len(series) > 1:
        legend, legend_h = _legend([(n, PALETTE[j % len(PALETTE)]) for j, (n, _) in enumerate(series)],
                                   left, base + 40, plot_w)
    height = base + 28 + legend_h + 8
    return (f'<figure id="{esc(cid)}" class="chart"><svg viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="{esc(title)}">{"".join(out)}{legend}</svg></figure>')


def line_chart(cid, title, xs, ys, fmt, y_label, bands, starts=(), width=540, colour=PALETTE[0]):
    """One series over time; `bands` are (x0, x1, label): the server's runs,
    shaded alternately and named above the plot. The line breaks at each
    index in `starts` (the server was stopped in between)."""
    left, right, top, plot_h = 70, 22, 46, 150
    plot_w = width - left - right
    if not xs:
        return (f'<figure id="{esc(cid)}" class="chart"><figcaption>{esc(title)}</figcaption>'
                f'<p class="empty">no samples</p></figure>')
    xmax = max([xs[-1]] + [b[1] for b in bands] + [1e-9])
    yt = linear_ticks(max([y for y in ys if y is not None] + [1e-9]), 4)
    xt = linear_ticks(xmax, 6)
    xt = [t for t in xt if t <= xmax * 1.0001]

    def px(x):
        return left + x / xmax * plot_w

    def py(y):
        return top + plot_h - y / yt[-1] * plot_h

    out = [f'<text x="{left}" y="16" class="tt">{esc(title)}</text>']
    for k, (x0, x1, label) in enumerate(bands):
        out.append(f'<rect x="{px(x0):.1f}" y="{top}" width="{max(px(x1) - px(x0), 1):.1f}" height="{plot_h}" '
                   f'class="band{k % 2}"/>')
        out.append(f'<text x="{(px(x0) + px(x1)) / 2:.1f}" y="{top - 6}" class="bl">{esc(label)}</text>')
    for t in yt:
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{py(t):.1f}" y2="{py(t):.1f}" class="grid"/>')
        out.append(f'<text x="{left - 6}" y="{py(t) + 4:.1f}" class="yt">{esc(fmt(t))}</text>')
    for t in xt:
        # The last label is anchored at its end so it is never cut off.
        anchor = "end" if px(t) > left + plot_w - 15 else "middle"
        out.append(f'<text x="{px(t):.1f}" y="{top + plot_h + 15}" class="xt" text-anchor="{anchor}">{esc(fmt_secs(t))}</text>')
    cuts = sorted(set(starts) | {0, len(xs)})
    for a, b in zip(cuts, cuts[1:]):
        pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs[a:b], ys[a:b]) if y is not None)
        out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
    out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" class="axis"/>')
    out.append(f'<text transform="translate(14,{top + plot_h / 2}) rotate(-90)" class="al">{esc(y_label)}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h + 32}" class="al">time since the server\'s first start</text>')
    height = top + plot_h + 40
    return (f'<figure id="{esc(cid)}" class="chart"><svg viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="{esc(title)}">{"".join(out)}</svg></figure>')


def resource_series(samples):
    """Samples (phase, t_unix, cpu_s, rss_kb) -> xs (s since the first),
    CPU % (one core = 100%) between consecutive samples of a phase (None
    for a phase's first), RSS in
    bytes, the phase bands and the index where each phase starts. A phase
    is one start of the server."""
    xs, cpu, rss, bands, starts = [], [], [], [], []
    if not samples:
        return xs, cpu, rss, bands, starts
    t0 = samples[0][1]
    prev = None
    for phase, t, cpu_s, rss_kb in samples:
        x = t - t0
        if prev is not None and prev[0] == phase and t > prev[1]:
            pct = max(0.0, (cpu_s - prev[2]) / (t - prev[1]) * 100)
        else:  # a phase's first sample: no interval to rate its CPU over
            pct = None
            bands.append([x, x, phase])
            starts.append(len(xs))
        # A band covers its samples and the interval after the last one, so
        # a run shorter than one interval still shows (sampled every 0.5 s).
        bands[-1][1] = x + 0.5
        xs.append(x)
        cpu.append(pct)
        rss.append(rss_kb * 1024)
        prev = (phase, t, cpu_s)
    return xs, cpu, rss, [tuple(b) for b in bands], starts


# ---------------------------------------------------------------- page
CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1500px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;max-width:260px}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}
.sat{background:#fde2d2}.bad{background:#f8c9c9}.ok{background:#d8f0dc}
.charts{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}
.chart svg{background:#fff;border:1px solid #ddd}
svg text{font-family:system-ui,sans-serif}
.tt{font-size:14px;font-weight:600}.yt{font-size:11px;text-anchor:end}.xt{font-size:11px;text-anchor:middle}
.al{font-size:11px;text-anchor:middle;fill:#555}.lg{font-size:12px}.na{font-size:11px;text-anchor:middle;fill:#999}
.mark{font-size:11px;text-anchor:middle;fill:#b22;font-weight:600}.bl{font-size:10px;text-anchor:middle;fill:#555}
.grid{stroke:#e5e5e5}.axis{stroke:#333}.band0{fill:#f4f7fb}.band1{fill:#fbf7f0}
.empty{color:#888}dl{display:grid;grid-template-columns:max-content auto;gap:2px 16px}dt{font-weight:600}
"""


def _kv(d):
    # An empty value is shown as such (summaries written before the
    # effective values were recorded have "").
    return "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v) if v != '' else '<i>not recorded</i>'}</dd>"
                            for k, v in d.items()) + "</dl>"


def _html_table(header, rows, cell_class=None):
    out = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"]
    for r, row in enumerate(rows):
        cells = []
        for c, v in enumerate(row):
            cls = cell_class(r, c, v) if cell_class else None
            cells.append(f'<td class="{cls}">{esc(v)}</td>' if cls else f"<td>{esc(v)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</table>"


def build_html(summary, table, ratios, verdict_reasons):
    """summary: {meta, rows}; table / ratios: (header, [[cells]]) as in
    table.md; verdict_reasons: why the run's exit status is not 0."""
    meta, rows = summary.get("meta") or {}, summary.get("rows") or []
    names = [r["server"] for r in rows]
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8>"
             f"<title>Ringcast and peers, {esc(meta.get('date', '?'))}</title><style>{CSS}</style></head><body>"]
    parts.append(f"<h1>Side by side: Ringcast and peers ({esc(meta.get('date', '?'))} {esc(meta.get('time', ''))})</h1>")
    parts.append(f"<p>Command: <code>{esc(meta.get('command', ''))}</code></p>")
    if verdict_reasons:
        parts.append('<p class="bad">Exit status 1: ' + esc("; ".join(verdict_reasons)) + "</p>")
    else:
        parts.append('<p class="ok">Exit status 0: every server ran, nothing lost or duplicated.</p>')

    parts.append("<h2>Parameters</h2>")
    parts.append(f"<p>{esc(meta.get('scenario', ''))}</p>")
    parts.append(_kv(meta.get("env") or {}))
    parts.append("<h2>Host</h2>")
    host = dict(meta.get("host_facts") or {})
    if not host and meta.get("host"):
        host = {"host": meta["host"]}
    parts.append(_kv(host))
    parts.append("<h3>Versions</h3>")
    parts.append(_kv(meta.get("versions") or {}))

    parts.append("<h2>Results</h2>")
    sat_cells = {(r, c) for r, row in enumerate(table[1]) for c, v in enumerate(row) if str(v).startswith("saturated")}
    parts.append(_html_table(table[0], table[1],
                             lambda r, c, v: "sat" if (r, c) in sat_cells else
                             ("bad" if table[1][r][0] == "status" and c > 0 and v != "ok" else None)))
    sat_notes = [f"{r['server']} ({kind} run): {r[kind]['saturated']}" for r in rows for kind in ("latency", "throughput")
                 if (r.get(kind) or {}).get("saturated")]
    if sat_notes:
        parts.append("<p><b>Saturated</b> (offered more than the server delivered, so its latency is the length "
                     "of its backlog, not its latency): " + esc("; ".join(sat_notes)) + "</p>")
    parts.append(_html_table(ratios[0], ratios[1]))
    for n in meta.get("notes") or []:
        parts.append(f"<p>{esc(n)}</p>")

    parts.append("<h2>Summary charts</h2><div class=charts>")

    def col(getter):
        return [getter(r) for r in rows]

    parts.append(bar_chart("chart-memory", "Idle memory per connection", names,
                           [("RSS / connection", col(lambda r: r.get("rss_per_conn_b"))),
                            ("PSS / connection", col(lambda r: r.get("pss_per_conn_b")))],
                           fmt_bytes, "bytes per connection"))
    parts.append(bar_chart("chart-connections", "Connections per second (storm)", names,
                           [("connections / s", col(lambda r: r.get("conns_per_s")))], fmt_rate, "connections / s"))
    sat = {r["server"]: "saturated" for r in rows if (r.get("latency") or {}).get("saturated")}
    parts.append(bar_chart("chart-deliveries", "Fan-out deliveries per second", names,
                           [("throughput run", col(lambda r: (r.get("throughput") or {}).get("deliveries_per_s"))),
                            ("fixed-rate run, achieved", col(lambda r: (r.get("latency") or {}).get("deliveries_per_s"))),
                            ("fixed-rate run, offered", col(lambda r: (r.get("latency") or {}).get("offered_per_s")))],
                           fmt_rate, "deliveries / s", marks=sat))
    parts.append(bar_chart("chart-latency", "Push latency, fixed-rate run", names,
                           [(q, col(lambda r, k=k: (r.get("latency") or {}).get(k)))
                            for q, k in (("p50", "p50_us"), ("p99", "p99_us"), ("p99.9", "p999_us"))],
                           fmt_us, "publish to receive", marks=sat))
    parts.append("</div>")

    parts.append("<h2>Server CPU and memory over its runs</h2>"
                 "<p>Sampled every 0.5 s from /proc (the server's whole process tree: nginx workers, "
                 "Pushpin's processes); 100% = one core busy. Each shaded band is one start of the server: "
                 "idle connections, connection storm, fixed-rate fan-out, throughput fan-out.</p>")
    for i, r in enumerate(rows):
        xs, cpu, rss, bands, starts = resource_series([tuple(s) for s in (r.get("resources") or [])])
        slug = "".join(ch if ch.isalnum() else "-" for ch in r["server"])
        parts.append(f"<h3>{esc(r['server'])}</h3><div class=charts>")
        parts.append(line_chart(f"timeline-cpu-{slug}", f"{r['server']}: CPU", xs, cpu, fmt_pct,
                                "CPU (% of one core)", bands, starts, colour=PALETTE[i % len(PALETTE)]))
        parts.append(line_chart(f"timeline-rss-{slug}", f"{r['server']}: RSS", xs, rss, fmt_bytes,
                                "resident memory", bands, starts, colour=PALETTE[i % len(PALETTE)]))
        parts.append("</div>")
    parts.append("</body></html>\n")
    return "".join(parts)
