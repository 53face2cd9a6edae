// The SDK's pure logic: backoff, close-code classification, stream
// position bookkeeping, the connect URL, token expiry and refresh timing.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  RATE_LIMIT_ABUSE_DELAY_MS,
  StreamTracker,
  backoffDelay,
  buildConnectUrl,
  classifyClose,
  refreshDelayMs,
  tokenExpiryMs,
} from "@ringcast/client";
import { mintToken } from "./engine.js";

describe("backoffDelay", () => {
  const o = { minDelayMs: 100, maxDelayMs: 5000, factor: 2, jitter: 0.5 };

  it("grows by the factor from the minimum and stops at the maximum", () => {
    const noJitter = () => 0;
    assert.deepEqual(
      [0, 1, 2, 3, 4, 5, 6, 10, 50].map((n) => backoffDelay(n, o, noJitter)),
      [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000],
    );
  });

  it("takes at most the jitter share off, never adds", () => {
    assert.equal(backoffDelay(3, o, () => 1), 400); // 800 · (1 − 0.5)
    assert.equal(backoffDelay(3, o, () => 0.5), 600);
    for (let i = 0; i < 200; i++) {
      const d = backoffDelay(4, o);
      assert.ok(d >= 800 && d <= 1600, `${d} out of [800, 1600]`);
    }
  });

  it("spreads clients out: random delays differ", () => {
    const seen = new Set(Array.from({ length: 50 }, () => backoffDelay(5, o)));
    assert.ok(seen.size > 10, `only ${seen.size} distinct delays`);
  });

  it("clamps jitter to 0..1 and uses the defaults when not given", () => {
    assert.equal(backoffDelay(0, { ...o, jitter: 7 }, () => 1), 0);
    assert.equal(backoffDelay(0, {}, () => 0), 500);
    assert.equal(backoffDelay(100, {}, () => 0), 20000);
  });
});

describe("classifyClose", () => {
  // Every code of docs/protocol.md "Close codes", with what the SDK does.
  const table: [number, string][] = [
    [1000, "reconnect"],
    [1001, "reconnect"],
    [1002, "stop"],
    [1003, "stop"],
    [1007, "stop"],
    [1008, "stop"],
    [1009, "reconnect"],
    [1011, "reconnect"],
    [1012, "reconnect-now"],
    [1013, "reconnect"],
    [4001, "new-token"],
    [4002, "new-token"],
    [4003, "stop"],
    [4005, "reconnect"],
    [4006, "stop"],
    [4007, "reconnect"],
    [4008, "reconnect"],
    [4009, "stop"],
    [4403, "stop"],
    [4500, "stop"],
    [4999, "stop"],
  ];
  for (const [code, action] of table) {
    it(`${code} -> ${action}`, () => assert.equal(classifyClose(code).action, action));
  }

  it("backs off at least 5 s after 4008 (rate limit abuse)", () => {
    assert.equal(classifyClose(4008).minDelayMs, RATE_LIMIT_ABUSE_DELAY_MS);
    assert.ok(RATE_LIMIT_ABUSE_DELAY_MS >= 5000);
  });

  it("treats transport failures (1005, 1006, 1015) as reconnect, unknown 4xxx as stop", () => {
    assert.equal(classifyClose(1005).action, "reconnect");
    assert.equal(classifyClose(1006).action, "reconnect");
    assert.equal(classifyClose(1015).action, "reconnect");
    assert.equal(classifyClose(4004).action, "stop");
  });
});

describe("StreamTracker", () => {
  const pub = (offset: number | undefined, epoch = "7") => ({ channel: "chat:a", id: "1", offset, epoch });

  it("delivers each offset once per epoch and records the position", () => {
    const t = new StreamTracker();
    assert.equal(t.position, undefined);
    assert.equal(t.accept(pub(1)), true);
    assert.equal(t.accept(pub(2)), true);
    assert.equal(t.accept(pub(2)), false);
    assert.equal(t.accept(pub(1)), false);
    assert.deepEqual(t.position, { offset: 2, epoch: "7" });
  });

  it("always delivers publications without a position (live channels)", () => {
    const t = new StreamTracker({ offset: 5, epoch: "7" });
    assert.equal(t.accept({ channel: "room:a", id: "1" }), true);
    assert.equal(t.accept(pub(undefined)), true);
    assert.deepEqual(t.position, { offset: 5, epoch: "7" });
  });

  it("adopts a new epoch: its offsets start over", () => {
    const t = new StreamTracker({ offset: 40, epoch: "7" });
    assert.equal(t.accept(pub(1, "9")), true);
    assert.deepEqual(t.position, { offset: 1, epoch: "9" });
    assert.equal(t.accept(pub(41, "7")), true); // another epoch again: delivered, not compared
  });

  it("continues from the server's position after recovered:false", () => {
    const t = new StreamTracker({ offset: 40, epoch: "7" });
    t.applyRecovery({ recovered: false, epoch: "9", offset: 3, start_offset: 1, replayed: 0 });
    assert.deepEqual(t.position, { offset: 3, epoch: "9" });
    assert.equal(t.accept(pub(3, "9")), false);
    assert.equal(t.accept(pub(4, "9")), true);
  });

  it("takes the summary's offset after a replay, and never moves back", () => {
    const t = new StreamTracker({ offset: 2, epoch: "7" });
    t.accept(pub(3));
    t.accept(pub(4));
    t.applyRecovery({ recovered: true, epoch: "7", offset: 4, start_offset: 1, replayed: 2 });
    assert.deepEqual(t.position, { offset: 4, epoch: "7" });
    t.applyRecovery({ recovered: true, epoch: "7", offset: 3, start_offset: 1, replayed: 0 });
    assert.deepEqual(t.position, { offset: 4, epoch: "7" });
  });

  it("learns the position of a fresh subscribe from its summary", () => {
    const t = new StreamTracker();
    t.applyRecovery({ recovered: true, epoch: "0", offset: 0, start_offset: 1, replayed: 0 });
    assert.deepEqual(t.position, { offset: 0, epoch: "0" });
    assert.equal(t.accept(pub(1, "12")), true); // the stream's first publication creates its epoch
  });
});

describe("buildConnectUrl", () => {
  const base = "ws://h:1/connection/websocket";

  it("puts the token, device and inbox position in the query", () => {
    assert.equal(
      buildConnectUrl(base, { token: "a.b.c", device: "ph one", inbox: { offset: 42, epoch: "18027704918304665" } }),
      `${base}?token=a.b.c&device=ph%20one&since=42&epoch=18027704918304665`,
    );
  });

  it("leaves out epoch 0, the default device_start, and what is not given", () => {
    assert.equal(buildConnectUrl(base, {}), base);
    assert.equal(buildConnectUrl(base, { inbox: { offset: 0, epoch: "0" } }), `${base}?since=0`);
    assert.equal(buildConnectUrl(base, { device: "d", deviceStart: "live" }), `${base}?device=d`);
    assert.equal(buildConnectUrl(base, { device: "d", deviceStart: "oldest" }), `${base}?device=d&device_start=oldest`);
    assert.equal(buildConnectUrl(base, { deviceStart: "oldest" }), base);
    assert.equal(buildConnectUrl(base, { imSince: "98.812" }), `${base}?im_since=98.812`);
  });
});

describe("token timing", () => {
  it("reads a JWT's exp without verifying it", () => {
    const exp = tokenExpiryMs(mintToken("u", 60))!;
    assert.ok(Math.abs(exp - (Date.now() + 60000)) < 2000, String(exp));
    assert.equal(tokenExpiryMs("not a jwt"), undefined);
    assert.equal(tokenExpiryMs("a.!!!.c"), undefined);
  });

  it("refreshes a margin before expiry, or half way for a short token", () => {
    assert.equal(refreshDelayMs(3_600_000, 0, 30_000), 3_570_000);
    assert.equal(refreshDelayMs(4_000, 0, 30_000), 2_000);
    assert.equal(refreshDelayMs(1_000, 2_000, 30_000), 0);
  });
});
