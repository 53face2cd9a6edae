//! `--report=FILE.html`: one self-contained HTML file per run: the
//! parameters, the host, the results (what the text table prints),
//! thresholds, hints, and the charts as inline SVG (drawn by `plot.rs`).
//! No scripts, fonts, style sheets or images from elsewhere: it reads the
//! same offline, from a CI artefact or a mail attachment.

use std::fmt::Write as _;

use crate::plot::{nines, short, spectrum_svg, timeline_svg, Scale, Unit};
use crate::report::{Latency, Summary, TimelinePoint};

const STYLE: &str = "
body { font-family: sans-serif; margin: 24px auto; max-width: 1000px; color: #222; }
h1 { font-size: 24px; margin-bottom: 4px; }
h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { padding: 3px 10px; border: 1px solid #ddd; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #fff; background: #2e7d32; padding: 1px 8px; border-radius: 3px; }
.fail { color: #fff; background: #c62828; padding: 1px 8px; border-radius: 3px; }
.muted { color: #777; }
.hint { background: #fff8e1; border-left: 4px solid #f9a825; padding: 6px 10px; margin: 6px 0; }
figure { margin: 12px 0; }
figure svg { width: 100%; height: auto; border: 1px solid #eee; }
";

/// Escape text for HTML element content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A two-column table of (name, value) rows.
fn key_values(out: &mut String, rows: &[(&str, String)]) {
    out.push_str("<table>\n");
    for (name, value) in rows {
        let _ = writeln!(
            out,
            "<tr><th>{}</th><td>{}</td></tr>",
            esc(name),
            esc(value)
        );
    }
    out.push_str("</table>\n");
}

pub fn render(summary: &Summary) -> anyhow::Result<String> {
    let mut out = String::new();
    let title = format!(
        "ringcast-loadgen {} against {}",
        summary.scenario, summary.target
    );
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        esc(&title),
        esc(&title)
    );
    let failed = summary.thresholds.iter().filter(|t| !t.passed).count();
    let verdict = if summary.thresholds.is_empty() {
        String::new()
    } else if failed == 0 {
        format!(
            " <span class=\"pass\">all {} thresholds passed</span>",
            summary.thresholds.len()
        )
    } else {
        format!(
            " <span class=\"fail\">{failed} of {} thresholds failed</span>",
            summary.thresholds.len()
        )
    };
    let _ = writeln!(
        out,
        "<p>profile {} · {} workers · {:.1} s · ringcast-loadgen {}{verdict}</p>",
        esc(&summary.profile),
        summary.workers,
        summary.elapsed_s,
        esc(&summary.host.loadgen_version)
    );
    thresholds(&mut out, summary);
    if !summary.hints.is_empty() {
        out.push_str("<h2>What went wrong</h2>\n");
        for hint in &summary.hints {
            let _ = writeln!(out, "<p class=\"hint\">{}</p>", esc(hint));
        }
    }
    results(&mut out, summary);
    charts(&mut out, summary)?;
    parameters(&mut out, summary);
    host(&mut out, summary);
    out.push_str("</body>\n</html>\n");
    Ok(out)
}

fn thresholds(out: &mut String, summary: &Summary) {
    if summary.thresholds.is_empty() {
        return;
    }
    out.push_str(
        "<h2>Thresholds</h2>\n<table>\n<tr><th>threshold</th><th>result</th><th>actual</th></tr>\n",
    );
    for outcome in &summary.thresholds {
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td><span class=\"{}\">{}</span></td><td>{}</td></tr>",
            esc(&outcome.expr),
            if outcome.passed { "pass" } else { "fail" },
            if outcome.passed { "passed" } else { "FAILED" },
            esc(&outcome.actual)
        );
    }
    out.push_str("</table>\n");
}

fn results(out: &mut String, s: &Summary) {
    out.push_str("<h2>Results</h2>\n");
    let mut rows: Vec<(&str, String)> = vec![(
        "connections",
        format!(
            "asked {}, attempted {}, connected {}",
            s.connections, s.attempted, s.connected
        ),
    )];
    match s.scenario.as_str() {
        "fanout" => {
            rows.push(("subscribed", s.subscribed.to_string()));
            rows.push((
                "published",
                format!("{} (errors {})", s.published, s.publish_errors),
            ));
        }
        "chat" => {
            rows.push(("subscribed", s.subscribed.to_string()));
            rows.push((
                "messages",
                format!(
                    "sent {}, acked {}, refused {}",
                    s.sent, s.published, s.publish_errors
                ),
            ));
        }
        "reconnect" => {
            rows.push((
                "sends",
                format!("requests {}, errors {}", s.published, s.publish_errors),
            ));
            rows.push((
                "reconnect",
                format!(
                    "dropped {}, reconnected {}, recovered {}, not recovered {}, replayed {}",
                    s.dropped, s.reconnected, s.recovered_true, s.recovered_false, s.replayed
                ),
            ));
        }
        _ => {}
    }
    if s.scenario != "connect" {
        rows.push((
            "deliveries",
            format!(
                "expected {}, received {}, lost {}, duplicated {}, out of order {}, gaps {}",
                s.expected, s.received, s.lost, s.duplicated, s.out_of_order, s.gaps
            ),
        ));
        rows.push((
            "throughput",
            format!(
                "{} deliveries/s over {:.2} s",
                short(s.deliveries_per_s),
                s.delivery_s
            ),
        ));
    }
    rows.push(("errors", s.errors_total.to_string()));
    rows.push((
        "client",
        format!(
            "{:.2} cores busy (workers {} ms, parent {} ms CPU), {} B per connection, \
             peak RSS {} KiB over workers",
            s.client.cores_busy,
            s.client.workers_cpu_ms,
            s.client.parent_cpu_ms,
            s.client.rss_per_connection_bytes,
            s.client.workers_max_rss_kb
        ),
    ));
    rows.push(("elapsed", format!("{:.1} s", s.elapsed_s)));
    key_values(out, &rows);

    out.push_str(
        "<table>\n<tr><th>latency</th><th class=\"num\">count</th><th class=\"num\">p50</th>\
         <th class=\"num\">p90</th><th class=\"num\">p99</th><th class=\"num\">p99.9</th>\
         <th class=\"num\">max</th></tr>\n",
    );
    for (name, latency) in s.latency_rows() {
        latency_row(out, &name, latency);
    }
    out.push_str("</table>\n");

    if !s.errors.is_empty() {
        out.push_str("<table>\n<tr><th>error</th><th class=\"num\">count</th></tr>\n");
        for (kind, count) in &s.errors {
            let _ = writeln!(
                out,
                "<tr><td><code>{}</code></td><td class=\"num\">{count}</td></tr>",
                esc(kind)
            );
        }
        out.push_str("</table>\n");
    }
    if !s.watched.is_empty() {
        out.push_str(
            "<table>\n<tr><th>server process</th><th class=\"num\">CPU avg</th>\
             <th class=\"num\">CPU peak</th><th class=\"num\">RSS start</th>\
             <th class=\"num\">RSS peak</th><th>note</th></tr>\n",
        );
        for p in &s.watched {
            let _ = writeln!(
                out,
                "<tr><td>{} (pid {})</td><td class=\"num\">{:.0}%</td><td class=\"num\">{:.0}%</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                esc(&p.name),
                p.pid,
                p.cpu_avg_pct(),
                p.cpu_peak_pct(),
                Unit::Mib.format(p.rss_start_kb() as f64 / 1024.0),
                Unit::Mib.format(p.rss_peak_kb() as f64 / 1024.0),
                p.exited_at_s
                    .map(|t| format!("exited at {t:.1} s"))
                    .unwrap_or_default()
            );
        }
        out.push_str("</table>\n");
    }
}

fn latency_row(out: &mut String, name: &str, latency: &Latency) {
    let ms = |us: u64| {
        if latency.count == 0 {
            "–".to_owned()
        } else {
            Unit::Ms.format(us as f64 / 1000.0)
        }
    };
    let _ = writeln!(
        out,
        "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
         <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
        esc(name),
        latency.count,
        ms(latency.p50_us),
        ms(latency.p90_us),
        ms(latency.p99_us),
        ms(latency.p999_us),
        ms(latency.max_us)
    );
}

fn figure(out: &mut String, svg: &str) {
    // plotters writes an XML declaration first; inline SVG must not have
    // it. Nor does it need the namespace attribute (HTML puts `<svg>` in
    // it), which would leave the page's only `http://` a reader might
    // take for a fetch.
    let svg = match svg.find("<svg") {
        Some(at) => &svg[at..],
        None => svg,
    };
    let svg = svg.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1);
    let _ = writeln!(out, "<figure>{svg}</figure>");
}

fn charts(out: &mut String, s: &Summary) -> anyhow::Result<()> {
    out.push_str("<h2>Charts</h2>\n");
    let spectrum = |points: &[crate::report::SpectrumPoint]| -> Vec<(f64, f64)> {
        points
            .iter()
            .map(|p| (nines(p.quantile), p.value_us.max(1) as f64 / 1000.0))
            .collect()
    };
    let mut spectra = Vec::new();
    if s.scenario != "connect" && !s.push_spectrum.is_empty() {
        spectra.push(("push".to_owned(), spectrum(&s.push_spectrum)));
    }
    if !s.connect_spectrum.is_empty() {
        spectra.push(("connect".to_owned(), spectrum(&s.connect_spectrum)));
    }
    if !spectra.is_empty() {
        figure(
            out,
            &spectrum_svg("latency by percentile (log scale)", &spectra)?,
        );
    }
    let timeline = |pick: fn(&TimelinePoint) -> f64| -> Vec<(f64, f64)> {
        s.timeline.iter().map(|p| (p.t_s, pick(p))).collect()
    };
    if s.timeline.len() >= 2 {
        if s.scenario != "connect" {
            figure(
                out,
                &timeline_svg(
                    "messages received per second",
                    Unit::PerSecond,
                    Scale::Linear,
                    &[("msgs/s".to_owned(), timeline(|p| p.msgs_per_s))],
                )?,
            );
        }
        figure(
            out,
            &timeline_svg(
                "open connections",
                Unit::Count,
                Scale::Linear,
                &[("open".to_owned(), timeline(|p| p.open as f64))],
            )?,
        );
        figure(
            out,
            &timeline_svg(
                "new connections per second",
                Unit::PerSecond,
                Scale::Linear,
                &[("connects/s".to_owned(), timeline(|p| p.connects_per_s))],
            )?,
        );
    }
    if !s.watched.is_empty() {
        let label = |p: &crate::watch::WatchedProcess| format!("{} {}", p.name, p.pid);
        let cpu: Vec<_> = s
            .watched
            .iter()
            .map(|p| {
                (
                    label(p),
                    p.samples.iter().map(|x| (x.t_s, x.cpu_pct)).collect(),
                )
            })
            .collect();
        let rss: Vec<_> = s
            .watched
            .iter()
            .map(|p| {
                (
                    label(p),
                    p.samples
                        .iter()
                        .map(|x| (x.t_s, x.rss_kb as f64 / 1024.0))
                        .collect(),
                )
            })
            .collect();
        figure(
            out,
            &timeline_svg(
                "server CPU (100% = one core)",
                Unit::Percent,
                Scale::Linear,
                &cpu,
            )?,
        );
        figure(
            out,
            &timeline_svg("server memory (RSS)", Unit::Mib, Scale::Linear, &rss)?,
        );
    }
    Ok(())
}

fn parameters(out: &mut String, s: &Summary) {
    if s.parameters.is_empty() {
        return;
    }
    out.push_str("<h2>Parameters</h2>\n<table>\n<tr><th>flag</th><th>value</th><th></th></tr>\n");
    for p in &s.parameters {
        let _ = writeln!(
            out,
            "<tr><td><code>--{}</code></td><td>{}</td><td class=\"muted\">{}</td></tr>",
            esc(&p.name),
            esc(&p.value),
            if p.default { "default" } else { "" }
        );
    }
    out.push_str("</table>\n");
}

fn host(out: &mut String, s: &Summary) {
    out.push_str("<h2>Host</h2>\n");
    let h = &s.host;
    let mut rows: Vec<(&str, String)> = vec![
        ("host", h.hostname.clone()),
        ("OS", h.os.clone()),
        ("kernel", h.kernel.clone()),
        ("CPU", h.cpu_model.clone()),
        ("cores", h.cores.to_string()),
        (
            "memory",
            Unit::Mib.format(h.memory_total_kb as f64 / 1024.0),
        ),
        ("open files (load generator)", h.open_files_limit.clone()),
        ("driver", h.driver.clone()),
        ("ringcast-loadgen", h.loadgen_version.clone()),
    ];
    for p in &s.watched {
        let version = if p.version.is_empty() {
            "version unknown".to_owned()
        } else {
            p.version.clone()
        };
        rows.push((
            "target",
            format!("{} (pid {}): {version}, {}", p.name, p.pid, p.exe),
        ));
    }
    key_values(out, &rows);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::SpectrumPoint;
    use crate::threshold::ThresholdOutcome;

    #[test]
    fn escapes_markup_from_the_run() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn renders_a_self_contained_page() {
        let summary = Summary {
            scenario: "fanout".to_owned(),
            target: "ws://127.0.0.1:1/<script>".to_owned(),
            push_spectrum: vec![
                SpectrumPoint {
                    quantile: 0.5,
                    value_us: 900,
                },
                SpectrumPoint {
                    quantile: 0.99,
                    value_us: 9_000,
                },
            ],
            timeline: vec![
                TimelinePoint::default(),
                TimelinePoint {
                    t_s: 1.0,
                    open: 10,
                    msgs_per_s: 1e5,
                    ..TimelinePoint::default()
                },
            ],
            thresholds: vec![ThresholdOutcome {
                expr: "p99<1ms".to_owned(),
                passed: false,
                actual: "9.00 ms".to_owned(),
            }],
            ..Summary::default()
        };
        let page = render(&summary).unwrap();
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(!page.contains("<script>"), "target is escaped");
        assert!(!page.contains("<?xml"), "inline SVG has no XML declaration");
        assert!(!page.contains("http"), "nothing that looks like a fetch");
        assert_eq!(page.matches("<svg").count(), 4, "spectrum + 3 timelines");
        assert!(page.contains("1 of 1 thresholds failed"));
        assert!(page.contains("100k/s"));
    }
}
