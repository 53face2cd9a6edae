#!/usr/bin/env python3
"""Counts every message on a NATS server by subject class: a plain NATS
client (the text protocol over one TCP socket, no library) subscribed to
`>`, for benches/cluster.sh. Every 0.1 s it rewrites OUT with the
running totals per class (`rc.c`, `rc.n`, `rc.s`, `rc.hb`, `rc.all`, `rc.q`,
`_INBOX` replies, ...): messages and payload bytes. The tap is one more
subscriber, so nats-server's out_bytes grow by what it counts.

usage: nats-tap.py nats://127.0.0.1:PORT OUT.json
Runs until killed (SIGTERM), writing OUT once more on the way out.
"""

import json
import os
import signal
import socket
import sys
import time


def subject_class(subject: str) -> str:
    parts = subject.split(".")
    if parts[0] == "_INBOX":
        return "_INBOX"
    return ".".join(parts[:2])


def main() -> int:
    url, out_path = sys.argv[1], sys.argv[2]
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"name":"bench-tap"}\r\nSUB > 1\r\nPING\r\n')
    totals: dict[str, dict[str, int]] = {}
    stop = False

    def on_term(_signum, _frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)

    def write():
        tmp = out_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(totals, f)
        os.replace(tmp, out_path)

    buf = b""
    last_write = 0.0
    sock.settimeout(0.1)
    while not stop:
        try:
            chunk = sock.recv(1 << 20)
        except socket.timeout:
            chunk = b""
        except InterruptedError:
            continue
        else:
            if not chunk:
                break
        buf += chunk
        while True:
            end = buf.find(b"\r\n")
            if end < 0:
                break
            line = buf[:end]
            if line.startswith(b"MSG "):
                # MSG <subject> <sid> [reply-to] <#bytes>
                fields = line.split()
                size = int(fields[-1])
                if len(buf) < end + 2 + size + 2:
                    break
                cls = subject_class(fields[1].decode())
                entry = totals.setdefault(cls, {"msgs": 0, "bytes": 0})
                entry["msgs"] += 1
                entry["bytes"] += size
                buf = buf[end + 2 + size + 2:]
                continue
            if line == b"PING":
                sock.sendall(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                print(f"nats-tap: {line.decode()}", file=sys.stderr)
            buf = buf[end + 2:]
        now = time.monotonic()
        if now - last_write >= 0.1:
            write()
            last_write = now
    write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
