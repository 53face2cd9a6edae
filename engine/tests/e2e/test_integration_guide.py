"""Runs the code blocks of docs/integration.md against the release binary.

A block under a `<!-- tested: NAME -->` marker is taken from the guide as
written (so the guide cannot drift from what works) and used as an app's
backend would use it: the token-minting functions in Python (PyJWT) and in
Node (no dependencies) mint tokens that the engine, started with the
repository's `ringcast.toml` on free ports, accepts for the right user.

Usage: test_integration_guide.py <release dir holding ringcast>
"""

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile

from websockets.asyncio.client import connect

from e2e_common import free_port, recv_json, wait_until_serving

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
# The dev secret of ringcast.toml, which this test starts the engine with.
SECRET = "dev-only-jwt-secret-change-me-0123456789"


def guide_block(name):
    """The fenced code block right under `<!-- tested: name -->`."""
    text = open(os.path.join(ROOT, "docs", "integration.md"), encoding="utf-8").read()
    match = re.search(r"<!-- tested: " + re.escape(name) + r" -->\n```\w*\n(.*?)\n```", text, re.S)
    assert match, f"docs/integration.md has no block marked tested: {name}"
    return match.group(1)


def python_token(user, **claims):
    scope = {}
    exec(guide_block("mint_token.py"), scope)
    return scope["connection_token"](user, SECRET, **claims)


def node_token(user, claims):
    with tempfile.TemporaryDirectory() as tmp:
        module = os.path.join(tmp, "mint_token.mjs")
        with open(module, "w", encoding="utf-8") as f:
            f.write(guide_block("mint_token.mjs"))
        script = (
            f"import {{ connectionToken }} from {json.dumps(module)};\n"
            f"console.log(connectionToken({json.dumps(user)}, {json.dumps(SECRET)}, 3600, {json.dumps(claims)}));\n"
        )
        out = subprocess.run(["node", "--input-type=module", "-e", script], check=True, capture_output=True, text=True)
        return out.stdout.strip()


async def connects_as(ws_port, token, user):
    async with connect(f"ws://127.0.0.1:{ws_port}/connection/websocket?token={token}") as ws:
        hello = await recv_json(ws)
        assert hello["connect"]["user"] == user, hello
        return hello


async def run(release):
    ws_port, api_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        flags = [
            f"--websocket-listen=127.0.0.1:{ws_port}",
            f"--api-listen=127.0.0.1:{api_port}",
            f"--server-data-dir={tmp}/data",
            "--log-level=warn",
        ]
        proc = subprocess.Popen([os.path.join(release, "ringcast"), "--config=ringcast.toml", *flags], cwd=ROOT)
        try:
            wait_until_serving(proc, api_port)
            await connects_as(ws_port, python_token("alice"), "alice")
            print("ok   integration guide: the Python token minter's token connects as its user")
            await connects_as(ws_port, node_token("bob", {"info": {"name": "Bob"}}), "bob")
            print("ok   integration guide: the Node token minter's token connects as its user")
            # A token signed with another secret is refused: the minters'
            # signatures are what the engine checks, not decoration.
            forged = python_token("mallory").rsplit(".", 1)[0] + ".AAAA"
            try:
                await connects_as(ws_port, forged, "mallory")
                raise AssertionError("a token with a bad signature connected")
            except Exception as err:  # websockets refuses the 401 upgrade
                assert "401" in str(err), err
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1]))
