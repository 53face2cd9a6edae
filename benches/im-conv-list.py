#!/usr/bin/env python3
"""conv_list end to end: one user with N direct conversations, made through
the HTTP API (`POST /api/im/msg_send` as that user, one message to each of N
peers, a few requests in flight), then `POST /api/im/conv_list` timed one
call at a time for the first page and for a deep page (the cursor 100
conversations from the end, as a client paging the whole list reaches it).
Prints p50/p99 in microseconds per page. Stdlib only; loopback only.

usage: im-conv-list.py API_ADDR API_KEY N [CALLS]
"""
import http.client
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

addr, key, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
calls = int(sys.argv[4]) if len(sys.argv) > 4 else 300
host, port = addr.rsplit(":", 1)
user = f"hub-{n}"
PAGE = 50
DEEP_FROM_END = 100


class Api:
    def __init__(self):
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def post(self, path, body):
        payload = json.dumps(body)
        headers = {"Authorization": f"apikey {key}", "Content-Type": "application/json"}
        for attempt in (0, 1):
            try:
                self.conn.request("POST", path, payload, headers)
                response = self.conn.getresponse()
                data = response.read()
                if response.status != 200:
                    raise RuntimeError(f"{path}: {response.status} {data[:200]!r}")
                return json.loads(data)
            except (http.client.HTTPException, ConnectionError):
                # The server may close an idle keep-alive connection.
                self.conn.close()
                self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
                if attempt:
                    raise


def make(chunk):
    api = Api()
    for idx in chunk:
        api.post("/api/im/msg_send", {"as_user": user, "to": f"peer-{idx:05}",
                                      "kind": "text", "data": {"text": "hello"}})


workers = 8
started = time.monotonic()
with ThreadPoolExecutor(workers) as pool:
    list(pool.map(make, [range(w, n, workers) for w in range(workers)]))
made_s = time.monotonic() - started

api = Api()
cursor, seen = None, 0
while seen + PAGE <= n - DEEP_FROM_END:
    body = {"as_user": user, "limit": PAGE}
    if cursor:
        body["cursor"] = cursor
    page = api.post("/api/im/conv_list", body)
    seen += len(page["convs"])
    cursor = page.get("next")
deep = cursor


def percentiles(cursor):
    body = {"as_user": user, "limit": PAGE}
    if cursor:
        body["cursor"] = cursor
    took = []
    for _ in range(calls):
        t0 = time.perf_counter()
        page = api.post("/api/im/conv_list", body)
        took.append((time.perf_counter() - t0) * 1e6)
        assert len(page["convs"]) == PAGE, page
    took.sort()
    return took[len(took) // 2], took[min(len(took) - 1, int(len(took) * 0.99))]


for name, cur in (("first_page", None), ("deep_page", deep)):
    p50, p99 = percentiles(cur)
    print(f"api conv_list {name} of {n} conversations: p50 {p50:.0f} us, p99 {p99:.0f} us "
          f"over {calls} calls (list made in {made_s:.1f} s)")
