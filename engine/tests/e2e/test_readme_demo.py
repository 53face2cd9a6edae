"""Runs the README's demo as written, against the release binaries.

Reads README.md's "Demo" section and takes from it: the subscribe command
the browser sends, the API request the backend makes (headers and body of
the `curl` line), and every reply the README shows (`// →`, `# →` and the
push the browser prints). Then it starts `ringcast` with the repository's
`ringcast.toml` (on free ports and a temporary store), mints the token with
the real `ringcast-token`, and checks each reply the server sends against
the README's: same keys, same values, where `"…"` stands for any string and
a bare `…` for any number. So the README cannot drift from the server.

Usage: test_readme_demo.py <release dir holding ringcast and ringcast-token>
"""

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request

from websockets.asyncio.client import connect

from e2e_common import free_port, wait_until_serving

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ANY_STRING = "\u0000any string"
ANY_NUMBER = "\u0000any number"


def demo_section():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    start = text.index("## Demo")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def expected(shown):
    """The README's JSON with its placeholders made matchable."""
    shown = shown.replace('"…"', json.dumps(ANY_STRING)).replace("…", json.dumps(ANY_NUMBER))
    return json.loads(shown)


def matches(want, got, path="$"):
    if want == ANY_STRING:
        assert isinstance(got, str), f"{path}: want a string, got {got!r}"
    elif want == ANY_NUMBER:
        assert isinstance(got, int) and not isinstance(got, bool), f"{path}: want a number, got {got!r}"
    elif isinstance(want, dict):
        assert isinstance(got, dict), f"{path}: want an object, got {got!r}"
        assert set(want) == set(got), f"{path}: README shows keys {sorted(want)}, server sent {sorted(got)}"
        for key in want:
            matches(want[key], got[key], f"{path}.{key}")
    else:
        assert want == got, f"{path}: README shows {want!r}, server sent {got!r}"


def parse_demo(section):
    demo = {}
    demo["subscribe"] = re.search(r"ws\.send\('(.*?)'\)", section).group(1)
    arrows = re.findall(r"^// → (.*)$", section, re.M)
    demo["connect"], demo["subscribed"] = arrows
    demo["api_headers"] = re.findall(r"-H '([^:]+): ([^']*)'", section)
    demo["api_body"] = re.search(r"-d '(.*?)'", section).group(1)
    demo["api_url"] = re.search(r"curl -s (\S+)", section).group(1)
    demo["published"] = re.search(r"^# → (.*)$", section, re.M).group(1)
    demo["push"] = re.search(r"the browser prints\n`(.*?)`", section).group(1)
    demo["token_args"] = re.search(r"ringcast-token (?:-- )?(.*?)\)", section).group(1).split()
    return demo


async def run(release, demo):
    ws_port, api_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        flags = [
            f"--websocket-listen=127.0.0.1:{ws_port}",
            f"--api-listen=127.0.0.1:{api_port}",
            f"--server-data-dir={tmp}/data",
            "--log-level=warn",
        ]
        token = subprocess.run(
            [os.path.join(release, "ringcast-token"), *demo["token_args"]],
            cwd=ROOT, check=True, capture_output=True, text=True,
        ).stdout.strip()
        proc = subprocess.Popen([os.path.join(release, "ringcast"), "--config=ringcast.toml", *flags], cwd=ROOT)
        try:
            wait_until_serving(proc, api_port)
            async with connect(f"ws://127.0.0.1:{ws_port}/connection/websocket?token={token}") as ws:
                recv = lambda: asyncio.wait_for(ws.recv(), timeout=5)
                matches(expected(demo["connect"]), json.loads(await recv()), "connect")
                await ws.send(demo["subscribe"])
                matches(expected(demo["subscribed"]), json.loads(await recv()), "subscribe reply")
                url = demo["api_url"].replace("127.0.0.1:8081", f"127.0.0.1:{api_port}")
                req = urllib.request.Request(url, data=demo["api_body"].encode(), method="POST")
                for name, value in demo["api_headers"]:
                    req.add_header(name, value)
                with urllib.request.urlopen(req, timeout=5) as resp:
                    matches(expected(demo["published"]), json.loads(resp.read()), "publish reply")
                matches(expected(demo["push"]), json.loads(await recv()), "push")
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def main(release):
    demo = parse_demo(demo_section())
    asyncio.run(run(release, demo))
    print("ok   README demo: connect, subscribe, API publish and push match what the server sends")


if __name__ == "__main__":
    main(sys.argv[1])
