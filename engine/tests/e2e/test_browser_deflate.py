"""permessage-deflate against a real browser: headless Chromium connects
with its default offer (`permessage-deflate; client_max_window_bits`),
subscribes, publishes a chat batch (Chromium compresses what it sends) and
receives the push back (compressed by the engine, inflated by Chromium).

The page reports what it saw (`ws.extensions`, whether the push matched)
with a POST to this script's own HTTP server; the script then checks the
engine's `ringcast_bytes_out_total`: the push went out at a fraction of its
plain size, so it was sent compressed.
Usage: test_browser_deflate.py <path to ringcast binary> <path to chromium>
"""

import asyncio
import http.server
import json
import re
import subprocess
import sys
import tempfile
import threading
import urllib.request

from test_python_client import check, free_port, main, token

CHECKS = []
CHROMIUM = sys.argv[2] if len(sys.argv) > 2 else "chromium"

PAGE = b"""<!doctype html><meta charset="utf-8"><title>ringcast deflate</title>
<script>
const q = new URLSearchParams(location.search);
const batch = Array.from({length: 200}, (_, i) => ({user: "user" + i, text: "hello from the chat room"}));
let reported = false;
const report = (result) => {
  if (reported) return;
  reported = true;
  fetch("/result", {method: "POST", body: JSON.stringify(result)});
};
const ws = new WebSocket(q.get("ws") + "?token=" + q.get("token"));
ws.onmessage = (event) => {
  const message = JSON.parse(event.data);
  if (message.connect) {
    ws.send(JSON.stringify({id: 1, method: "subscribe", params: {channel: "chat:browser"}}));
  } else if (message.id === 1) {
    ws.send(JSON.stringify({id: 2, method: "publish", params: {channel: "chat:browser", data: batch}}));
  } else if (message.push) {
    report({extensions: ws.extensions, matches: JSON.stringify(message.push.data) === JSON.stringify(batch),
            bytes: event.data.length});
  }
};
ws.onerror = () => report({error: "websocket error"});
ws.onclose = (event) => report({error: "closed with " + event.code});
</script>"""


def bytes_out(api_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(int(v) for v in re.findall(r"^ringcast_bytes_out_total\{[^}]*\} (\d+)$", text, re.M))


@check("Chromium negotiates deflate, sends compressed, receives a compressed push", CHECKS)
async def t_browser(ws_url, api_port, _proc):
    results = []
    done = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(PAGE)

        def do_POST(self):
            results.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()
            done.set()

        def log_message(self, *_args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    before = bytes_out(api_port)
    page = f"http://127.0.0.1:{server.server_address[1]}/?ws={ws_url}&token={token('browser')}"
    with tempfile.TemporaryDirectory() as profile:
        browser = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--user-data-dir={profile}", page],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            finished = await asyncio.to_thread(done.wait, 60)
        finally:
            browser.kill()
            browser.wait()
            server.shutdown()
    assert finished, "the page reported nothing within 60 s"
    result = results[0]
    assert "error" not in result, result
    assert result["extensions"].startswith("permessage-deflate"), result
    assert "server_no_context_takeover" in result["extensions"], result
    assert result["matches"], result
    sent = bytes_out(api_port) - before
    # The 101, the connect message, two replies and the push: all of it
    # less than half the push's plain size only if the push was compressed.
    assert sent < result["bytes"] // 2, (sent, result["bytes"])


if __name__ == "__main__":
    ok = asyncio.run(main(sys.argv[1], CHECKS, "compression = true", "browser deflate e2e"))
    sys.exit(0 if ok else 1)
