#!/usr/bin/env python3
"""Tests of benches/compare/compare.py on the two fake runs in testdata/
(run-a: every server clean; run-b: Ringcast faster with a worse p99, nchan
lost 10 messages, sockudo saturated at the fixed rate). Standard library
only; runs compare.py as benches/compare/run does, as a program.

    python3 benches/compare/test.py
"""

import html.parser
import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
COMPARE = os.path.join(HERE, "compare.py")
RUN_A = os.path.join(HERE, "testdata", "run-a")
RUN_B = os.path.join(HERE, "testdata", "run-b")
sys.path.insert(0, HERE)
import compare  # noqa: E402


def run(*args, env=None):
    return subprocess.run([sys.executable, COMPARE, *args], capture_output=True, text=True, env=env)


class Diff(unittest.TestCase):
    def setUp(self):
        got = run("diff", RUN_A, os.path.join(RUN_B, "summary.json"), "--json")
        self.assertEqual(got.returncode, 0, got.stderr)
        self.d = {(x["server"], x["measure"]): x for x in json.loads(got.stdout)}

    def test_higher_is_better_measure_up_is_better(self):
        x = self.d[("ringcast-io_uring", "fan-out deliveries / s (throughput run)")]
        self.assertEqual(x["direction"], "better")
        self.assertAlmostEqual(x["change"], 0.2)

    def test_lower_is_better_measure_up_is_worse(self):
        x = self.d[("ringcast-io_uring", "p99 ms (fixed rate)")]
        self.assertEqual(x["direction"], "worse")
        self.assertAlmostEqual(x["change"], 0.25)
        self.assertEqual((x["a"], x["b"]), (36.0, 45.0))  # shown in ms

    def test_lower_is_better_measure_down_is_better(self):
        x = self.d[("ringcast-io_uring", "idle RSS / connection (B)")]
        self.assertEqual(x["direction"], "better")
        self.assertAlmostEqual(x["change"], -0.0625)

    def test_higher_is_better_measure_down_is_worse(self):
        x = self.d[("nchan", "connections / s (storm)")]
        self.assertEqual(x["direction"], "worse")

    def test_tiny_change_is_same(self):
        self.assertEqual(self.d[("ringcast-io_uring", "connections / s (storm)")]["direction"], "same")

    def test_loss_and_saturation_and_status_are_worse(self):
        self.assertEqual(self.d[("nchan", "lost (fixed rate)")]["direction"], "worse")
        self.assertEqual(self.d[("sockudo", "saturated (latency run)")]["direction"], "worse")
        self.assertEqual(self.d[("nchan", "status")]["direction"], "worse")

    def test_text_output_names_direction_and_percentage(self):
        got = run("diff", RUN_A, RUN_B)
        line = next(l for l in got.stdout.splitlines() if "ringcast-io_uring" in l and "deliveries / s (throughput" in l)
        self.assertIn("+20.0%", line)
        self.assertIn("BETTER", line)
        self.assertIn("(higher is better)", line)


class Saturation(unittest.TestCase):
    def setUp(self):
        with open(os.path.join(RUN_B, "summary.json")) as f:
            self.rows = {r["server"]: r for r in json.load(f)["rows"]}

    def test_saturated_server_is_flagged_with_both_reasons(self):
        why = compare.saturation(self.rows["sockudo"]["latency"])
        self.assertIn("delivered 9,000/s of 20,000/s offered (45%)", why)
        self.assertIn("p99 grew from", why)

    def test_clean_servers_are_not_flagged(self):
        for s in ("ringcast-io_uring", "nchan"):
            self.assertIsNone(compare.saturation(self.rows[s]["latency"]), s)
            self.assertIsNone(compare.saturation(self.rows[s]["throughput"]), s)

    def test_each_reason_alone_flags(self):
        rate_only = {"offered_per_s": 100_000, "deliveries_per_s": 50_000, "p99_trend_us": [40_000] * 8}
        trend_only = {"offered_per_s": 100_000, "deliveries_per_s": 99_000,
                      "p99_trend_us": [50_000, 60_000, 200_000, 400_000, 800_000, 900_000, 1_000_000, 1_100_000]}
        self.assertIn("delivered", compare.saturation(rate_only))
        self.assertIn("p99 grew", compare.saturation(trend_only))
        # Growth under the floor (a few ms jitter) is not saturation.
        small = {"offered_per_s": 100_000, "deliveries_per_s": 99_000, "p99_trend_us": [1_000] * 4 + [9_000] * 4}
        self.assertIsNone(compare.saturation(small))

    def test_table_shows_saturated_instead_of_plain_latency(self):
        (header, body), (rheader, rbody) = compare.tables(list(self.rows.values()))
        col = header.index("sockudo")
        p99 = next(r for r in body if r[0] == "p99 ms (fixed rate)")
        self.assertEqual(p99[col], "saturated (3,900)")
        self.assertEqual(p99[header.index("nchan")], "42.0")
        # A saturated latency is not ranked against the others.
        self.assertEqual(next(r for r in rbody if r[0] == "p99 ms (fixed rate)")[rheader.index("sockudo")], "—")


class ExitStatus(unittest.TestCase):
    def test_clean_run_exits_0(self):
        got = run("verdict", RUN_A)
        self.assertEqual(got.returncode, 0, got.stderr)
        self.assertEqual(got.stderr, "")

    def test_lost_messages_exit_1_and_are_named(self):
        got = run("verdict", RUN_B)
        self.assertEqual(got.returncode, 1)
        self.assertIn("FAIL nchan: 10 messages lost in the fixed-rate run", got.stderr)
        # Saturation alone is a finding, not a failure; sockudo lost nothing.
        self.assertNotIn("sockudo", got.stderr)

    def test_failed_skipped_and_duplicated_exit_1(self):
        with open(os.path.join(RUN_A, "summary.json")) as f:
            s = json.load(f)
        s["rows"][0]["status"] = "failed: server did not start"
        s["rows"][1]["status"] = "skipped: nginx or libnginx-mod-nchan is not installed"
        s["rows"][2]["throughput"]["duplicated"] = 3
        reasons = compare.verdict(s)
        self.assertEqual(reasons, ["ringcast-io_uring: failed: server did not start",
                                   "nchan: skipped: nginx or libnginx-mod-nchan is not installed",
                                   "sockudo: 3 messages duplicated in the throughput run"])


class Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.ids, self.svg_in = [], set(), {}
        self.stack = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "svg":
            for t, ta in self.stack:
                if "id" in ta:
                    self.svg_in[ta["id"]] = True
        if tag not in ("rect", "line", "text", "polyline", "title", "meta", "br", "dt", "dd"):
            self.stack.append((tag, a))

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break


class Report(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.path = os.path.join(self.dir, "r.html")
        got = run("report", RUN_B, f"--report={self.path}")
        self.assertEqual(got.returncode, 0, got.stderr)
        with open(self.path) as f:
            self.html = f.read()
        self.p = Tags()
        self.p.feed(self.html)

    def test_self_contained(self):
        names = {t for t, _ in self.p.tags}
        self.assertFalse(names & {"script", "link", "img", "iframe", "object"}, names)
        for tag, a in self.p.tags:
            self.assertFalse({"src", "href"} & set(a), (tag, a))
        self.assertNotIn("url(", self.html)
        self.assertNotIn("@import", self.html)

    def test_every_chart_is_an_inline_svg(self):
        want = ["chart-memory", "chart-connections", "chart-deliveries", "chart-latency"]
        for s in ("ringcast-io_uring", "nchan", "sockudo"):
            slug = s.replace("_", "-")
            want += [f"timeline-cpu-{slug}", f"timeline-rss-{slug}"]
        for cid in want:
            self.assertIn(cid, self.p.ids)
            self.assertTrue(self.p.svg_in.get(cid), f"{cid} has no <svg>")

    def test_parameters_host_versions_table(self):
        for text in ("Parameters", "CONNECTIONS", "fixture CPU", "Debian GNU/Linux 12", "sockudo 5.2.0",
                     "nginx/1.22.1", "p99 ms (fixed rate)", "saturated (3,900)", "ratio to best peer"):
            self.assertIn(text, self.html)
        self.assertIn("Exit status 1", self.html)

    def test_latency_axis_is_log_and_saturation_marked(self):
        latency = self.html.split('id="chart-latency"', 1)[1].split("</figure>", 1)[0]
        self.assertIn("(log scale)", latency)  # 14 ms to 4 s: decades apart
        self.assertIn(">saturated<", latency)
        self.assertIn(" ms<", latency)  # units on the ticks
        self.assertIn(" s<", latency)

    def test_deliveries_ticks_have_units(self):
        chart = self.html.split('id="chart-deliveries"', 1)[1].split("</figure>", 1)[0]
        self.assertIn("M/s<", chart)
        self.assertNotIn("000000", chart.split("<title>")[0])

    def test_legend_is_below_the_plot(self):
        chart = self.html.split('id="chart-latency"', 1)[1].split("</figure>", 1)[0]
        axis_y = float(chart.split('class="axis"', 1)[0].rsplit('y1="', 1)[1].split('"', 1)[0])
        legend_y = float(chart.split('class="lg"', 1)[0].rsplit('y="', 1)[1].split('"', 1)[0])
        self.assertGreater(legend_y, axis_y + 20)  # under the category labels too


class Meta(unittest.TestCase):
    KNOBS = {"SERVERS": "ws_baseline", "CONNECTIONS": "5000", "IDLE_CONNECT_RATE": "1000", "CONNECT_RATE": "10000",
             "HOLD_S": "6", "FANOUT_CONNECTIONS": "5000", "FANOUT_CONNECT_RATE": "1000", "LATENCY_RATE": "20",
             "LATENCY_SECONDS": "10", "THROUGHPUT_PUBLICATIONS": "2000", "THROUGHPUT_SECONDS": "8", "WINDOW": "32",
             "THROUGHPUT_RATE": "200", "WORKERS": "2", "SERVER_THREADS": "2", "OUT_DIR": "target/x", "INSTALL": "1",
             "BUILD": "1", "BIN_DIR": "target/release", "CLOSED_LOOP": "1"}

    def test_meta_env_records_effective_values(self):
        d = tempfile.mkdtemp()
        versions = os.path.join(d, "versions.txt")
        with open(versions, "w") as f:
            f.write("ringcast=ringcast 0.1.0\nkernel=6.1\n")
        env = {k: v for k, v in os.environ.items() if k not in self.KNOBS}
        env.update(self.KNOBS)
        got = run("meta", os.path.join(d, "meta.json"), versions, "ws_baseline", "benches/compare/run", env=env)
        self.assertEqual(got.returncode, 0, got.stderr)
        with open(os.path.join(d, "meta.json")) as f:
            meta = json.load(f)
        self.assertEqual(meta["env"]["CONNECTIONS"], "5000")
        self.assertEqual(meta["env"]["OUT_DIR"], "target/x")
        self.assertNotIn("", meta["env"].values())
        self.assertEqual(meta["host_facts"]["cores"], os.cpu_count())
        self.assertIn("window 32", meta["scenario"])

    def test_a_knob_run_did_not_export_is_an_error(self):
        env = {k: v for k, v in os.environ.items() if k not in self.KNOBS}
        env.update({k: v for k, v in self.KNOBS.items() if k != "WINDOW"})
        got = run("meta", "/dev/null", "/dev/null", "x", "x", env=env)
        self.assertEqual(got.returncode, 2)
        self.assertIn("WINDOW", got.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=1)
