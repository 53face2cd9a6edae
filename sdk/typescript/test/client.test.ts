// The Client's state machine against a scripted fake WebSocket: the
// orderings the engine produces only under races (a live push crossing a
// catchup, a push dropped by a full lane, a close in the middle of an ack)
// are played here message by message.
import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { Client, RingcastError, type ClientOptions, type Publication } from "@ringcast/client";

let sockets: FakeWS[] = [];

class FakeWS {
  readyState = 0;
  sent: any[] = [];
  onopen: ((ev: any) => void) | null = null;
  onmessage: ((ev: { data: any }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: any) => void) | null = null;
  constructor(readonly url: string) {
    sockets.push(this);
    setTimeout(() => {
      if (this.readyState !== 0) return;
      this.readyState = 1;
      this.onopen?.({});
    }, 0);
  }
  send(d: string) {
    this.sent.push(JSON.parse(d));
  }
  close() {
    this.readyState = 3;
  }
  /** A message from the server. */
  srv(m: unknown) {
    this.onmessage?.({ data: JSON.stringify(m) });
  }
  /** The connection fails without a close frame. */
  drop(code = 1006) {
    this.readyState = 3;
    this.onclose?.({ code, reason: "" });
  }
  commands(method: string) {
    return this.sent.filter((m) => m.method === method);
  }
  /** Answers the newest `method` command with `result`. */
  answer(method: string, result: unknown) {
    const cmd = this.commands(method).at(-1);
    assert.ok(cmd, `no ${method} sent`);
    this.srv({ id: cmd.id, result });
  }
}

const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));
const jwt = (expS: number, sub = "a") =>
  "x." + Buffer.from(JSON.stringify({ sub, exp: expS })).toString("base64url") + ".y";
const inHour = () => jwt(Math.floor(Date.now() / 1000) + 3600);
const push = (channel: string, offset: number, sender = "b", epoch = "7") => ({
  push: { channel, id: `${channel}/${offset}`, offset, epoch, sender, time: 1, data: { n: offset } },
});
const connectMsg = (extra: Record<string, unknown> = {}) => ({
  connect: { client: "1", user: "a", ping_interval_ms: 0, shard: 0, ...extra },
});
const conv = (c: string, last: number, epoch = "7") => ({
  conv: c, sid: "1", peer: "b", epoch, last_offset: last, last_time_ms: 1, last_msg_offset: last, read_offset: 0, unread: 0,
});
const sync = (convs: unknown[], more = false) => ({ im_sync: { convs, token: "1.1", more, total_unread: 0 } });
const caught = (c: string, offset: number, o: Record<string, unknown> = {}) => ({
  conv: c, recovered: true, epoch: "7", offset, start_offset: 1, replayed: 0, truncated: false, ...o,
});

const clients: Client[] = [];
function mk(opts: Partial<ClientOptions> = {}) {
  sockets = [];
  const c = new Client({
    url: "ws://h/ws",
    token: inHour(),
    WebSocket: FakeWS as unknown as ClientOptions["WebSocket"],
    reconnect: { minDelayMs: 1, maxDelayMs: 1, jitter: 0 },
    ...opts,
  });
  clients.push(c);
  const got: Publication[] = [];
  const errors: RingcastError[] = [];
  c.on("publication", (p) => got.push(p));
  c.on("error", (e) => errors.push(e));
  return { c, got, errors, offsets: () => got.map((p) => p.offset) };
}

/** Connects and returns the open socket, `connect` received. */
async function up(c: Client, extra: Record<string, unknown> = {}): Promise<FakeWS> {
  if (c.state === "disconnected") c.connect();
  await tick();
  const s = sockets.at(-1)!;
  assert.equal(s.readyState, 1);
  s.srv(connectMsg(extra));
  return s;
}

afterEach(() => {
  for (const c of clients.splice(0)) c.disconnect();
});

describe("conversations stay contiguous", () => {
  it("a live push before the sync after a reconnect reads the gap first (6, 7 sent while away)", async () => {
    const { c, offsets } = mk();
    const s0 = await up(c);
    s0.srv(sync([]));
    for (const o of [1, 2, 3, 4, 5]) s0.srv(push("dm:x", o));
    s0.drop();
    await tick(20);
    const s1 = await up(c);
    s1.srv(push("dm:x", 8)); // live, before the sync
    await tick();
    assert.deepEqual(offsets(), [1, 2, 3, 4, 5], "8 is held, not delivered past the gap");
    const [cu] = s1.commands("catchup");
    assert.deepEqual(cu.params.convs, [{ conv: "dm:x", since: 5, epoch: "7" }]);
    s1.srv(sync([conv("dm:x", 8)])); // the sync lists it: no second catchup while one runs
    for (const o of [6, 7, 8]) s1.srv(push("dm:x", o)); // the replay, 8 again
    s1.answer("catchup", { convs: [caught("dm:x", 8, { replayed: 3 })] });
    s1.srv(push("dm:x", 9));
    await tick();
    assert.deepEqual(offsets(), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.equal(s1.commands("catchup").length, 1);
  });

  it("a live push that crosses the catchup is neither lost nor repeated", async () => {
    const { c, offsets } = mk();
    const s0 = await up(c);
    for (const o of [1, 2, 3, 4, 5]) s0.srv(push("dm:x", o));
    s0.drop();
    await tick(20);
    const s1 = await up(c);
    s1.srv(sync([conv("dm:x", 7)]));
    await tick();
    assert.equal(s1.commands("catchup")[0].params.convs[0].since, 5);
    s1.srv(push("dm:x", 8)); // pushed before the catchup reached the server
    for (const o of [6, 7, 8]) s1.srv(push("dm:x", o));
    s1.answer("catchup", { convs: [caught("dm:x", 8, { replayed: 3 })] });
    await tick();
    assert.deepEqual(offsets(), [1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it("a push dropped mid-session (offset past last + 1) is read, and a truncated catchup reads on", async () => {
    const { c, offsets } = mk();
    const s = await up(c);
    s.srv(sync([]));
    s.srv(push("grp:g", 1));
    s.srv(push("grp:g", 4));
    await tick();
    assert.deepEqual(offsets(), [1]);
    assert.deepEqual(s.commands("catchup")[0].params.convs, [{ conv: "grp:g", since: 1, epoch: "7" }]);
    s.srv(push("grp:g", 2));
    s.answer("catchup", { convs: [caught("grp:g", 2, { truncated: true })] });
    await tick();
    assert.deepEqual(offsets(), [1, 2]);
    assert.equal(s.commands("catchup").length, 2, "the rest is read");
    assert.equal(s.commands("catchup")[1].params.convs[0].since, 2);
    s.srv(push("grp:g", 3));
    s.srv(push("grp:g", 4));
    s.answer("catchup", { convs: [caught("grp:g", 4)] });
    await tick();
    assert.deepEqual(offsets(), [1, 2, 3, 4]);
  });

  it("a catchup that skips entries outside the user's window moves past them", async () => {
    const { c, offsets } = mk();
    const s = await up(c);
    s.srv(push("grp:g", 10));
    s.srv(push("grp:g", 30)); // removed at 10, added back at 30
    await tick();
    s.answer("catchup", { convs: [caught("grp:g", 30)] }); // nothing else visible
    s.srv(push("grp:g", 31));
    await tick();
    assert.deepEqual(offsets(), [10, 30, 31]);
    assert.equal(s.commands("catchup").length, 1);
  });

  it("recovered:false on a conversation is reported and the position continues from the server's", async () => {
    const { c, offsets } = mk();
    const recoveries: any[] = [];
    c.on("recovery", (r) => recoveries.push(r));
    const s = await up(c);
    s.srv(push("dm:x", 3));
    s.srv(push("dm:x", 1, "b", "9")); // another epoch: the conversation was reset
    await tick();
    s.answer("catchup", {
      convs: [{ conv: "dm:x", recovered: false, epoch: "9", offset: 1, start_offset: 1, replayed: 0, truncated: false }],
    });
    s.srv(push("dm:x", 2, "b", "9"));
    await tick();
    assert.deepEqual(recoveries.map((r) => [r.channel, r.recovery.recovered, r.recovery.offset]), [["dm:x", false, 1]]);
    assert.deepEqual(offsets(), [3, 2]);
  });

  it("the app's own echo:false message moves the position (no catchup for it)", async () => {
    const { c, offsets } = mk();
    const s = await up(c);
    s.srv(push("dm:x", 1));
    const sent = c.im.send({ conv: "dm:x", kind: "text", data: { text: "hi" }, echo: false });
    await tick();
    s.answer("msg_send", { conv: "dm:x", id: "2", offset: 2, epoch: "7", time: 1 });
    await sent;
    s.srv(push("dm:x", 3));
    await tick();
    assert.deepEqual(offsets(), [1, 3]);
    assert.equal(s.commands("catchup").length, 0);
  });

  it("with more:true, a conversation the sync left out is caught up from its position", async () => {
    const { c } = mk();
    const s0 = await up(c);
    s0.srv(push("dm:x", 4));
    s0.srv(push("dm:y", 2));
    s0.drop();
    await tick(20);
    const s1 = await up(c);
    s1.srv(sync([conv("dm:y", 2)], true));
    await tick();
    assert.deepEqual(s1.commands("catchup")[0].params.convs, [{ conv: "dm:x", since: 4, epoch: "7" }]);
  });
});

describe("server-side subscriptions", () => {
  it("are deduplicated, acked on the device, and their recovery applied", async () => {
    const { c, offsets } = mk();
    const events: any[] = [];
    c.on("serverSubscribed", (e) => events.push(e));
    const s0 = await up(c);
    assert.match(s0.url, /device=sdk-/, "a Client without a device names its own");
    s0.srv({ subscribed: { channel: "chat:g" } });
    s0.srv(push("chat:g", 1));
    s0.srv(push("chat:g", 2));
    s0.srv(push("chat:g", 2));
    await tick();
    assert.deepEqual(offsets(), [1, 2]);
    assert.deepEqual(s0.commands("ack").map((a) => a.params), [{ stream: "chat:g", offset: 1 }]);
    s0.answer("ack", {});
    await tick();
    assert.deepEqual(s0.commands("ack").at(-1).params, { stream: "chat:g", offset: 2 });
    s0.answer("ack", {});
    s0.drop();
    await tick(20);
    const s1 = await up(c);
    const device = /device=([^&]+)/.exec(s0.url)![1];
    assert.ok(s1.url.includes(`device=${device}`), "the same device after a reconnect: its cursor resumes");
    s1.srv({ subscribed: { channel: "chat:g" } });
    s1.srv(push("chat:g", 3)); // replayed from the cursor
    s1.srv({ id: 0, result: { channel: "chat:g", recovery: { recovered: true, epoch: "7", offset: 3, start_offset: 1, replayed: 1 } } });
    s1.srv(push("chat:g", 3)); // a late copy
    await tick();
    assert.deepEqual(offsets(), [1, 2, 3]);
    assert.deepEqual(events, [{ channel: "chat:g", resubscribed: false }, { channel: "chat:g", resubscribed: true }]);
  });
});

describe("acks", () => {
  it("an ack cut off by a disconnect is sent again at connect, and flushAcks waits for it", async () => {
    const { c } = mk({ device: "d1" });
    const s0 = await up(c);
    s0.srv(push("user:a", 3));
    await tick();
    assert.equal(s0.commands("ack").length, 1);
    s0.drop();
    await tick(20);
    const s1 = await up(c);
    await tick();
    assert.deepEqual(s1.commands("ack").map((a) => a.params), [{ stream: "user:a", offset: 3 }]);
    let flushed = false;
    const f = c.flushAcks().then(() => (flushed = true));
    await tick();
    assert.equal(flushed, false, "flushAcks waits for the server");
    s1.answer("ack", {});
    await f;
    assert.equal(flushed, true);
  });

  it("flushAcks rejects while disconnected with acks owed", async () => {
    const { c } = mk({ device: "d1", reconnect: { minDelayMs: 60000, maxDelayMs: 60000 } });
    const s0 = await up(c);
    s0.srv(push("user:a", 3));
    await tick();
    s0.drop();
    await assert.rejects(c.flushAcks(), { code: 0 });
  });

  it("a publication a listener threw on is not acked, nor anything after it", async () => {
    const { c, got } = mk({ device: "d1" });
    const s = await up(c);
    s.srv(push("user:a", 1));
    await tick();
    s.answer("ack", {});
    const off = c.on("publication", (p) => {
      if (p.offset === 2) throw new Error("app failed");
    });
    // The emitter rethrows a listener's exception on a fresh task; catch
    // it there instead of failing the test run.
    const uncaught: unknown[] = [];
    const realSetTimeout = globalThis.setTimeout;
    globalThis.setTimeout = ((fn: () => void, ms?: number) =>
      realSetTimeout(() => {
        try {
          fn();
        } catch (e) {
          uncaught.push(e);
        }
      }, ms)) as typeof setTimeout;
    try {
      s.srv(push("user:a", 2));
    } finally {
      globalThis.setTimeout = realSetTimeout;
    }
    off();
    s.srv(push("user:a", 3));
    await tick(20);
    assert.equal(got.length, 3);
    assert.deepEqual(s.commands("ack").map((a) => a.params.offset), [1]);
    assert.equal(uncaught.length, 1, "the listener's exception still reaches the host");
  });
});

describe("tokens", () => {
  it("a token living past the timer limit (30 days) does not refresh in a loop", async () => {
    let calls = 0;
    const exp = Math.floor(Date.now() / 1000) + 30 * 86400;
    const { c } = mk({ token: jwt(exp), getToken: async () => (calls++, jwt(exp)) });
    const s = await up(c, { expires: exp * 1000 });
    await tick(100);
    assert.equal(calls, 0);
    assert.equal(s.commands("refresh").length, 0);
  });

  it("a token the server refused on refresh (101) is not used to reconnect", async () => {
    let n = 0;
    const { c, errors } = mk({
      token: jwt(Math.floor(Date.now() / 1000) + 2),
      getToken: async () => (n++ === 0 ? "revoked.x.y" : inHour()),
    });
    const s0 = await up(c, { expires: Date.now() + 200 }); // refreshed half way
    await tick(180);
    s0.srv({ id: s0.commands("refresh")[0].id, error: { code: 101, message: "invalid token" } });
    await tick();
    assert.equal(errors.at(-1)?.code, 101);
    s0.drop();
    await tick(30);
    const s1 = sockets.at(-1)!;
    assert.notEqual(s1, s0);
    assert.ok(!s1.url.includes("revoked"), s1.url);
  });

  it("asks getToken again after sockets keep closing before `connect` (an HTTP 401 looks like 1006)", async () => {
    let calls = 0;
    const { c } = mk({ getToken: async () => (calls++, inHour()) });
    c.connect();
    for (let i = 0; i < 3; i++) {
      await tick(10);
      sockets.at(-1)!.drop();
    }
    await tick(10);
    assert.ok(calls >= 1, `getToken called ${calls} times`);
  });

  it("without getToken, an expired token stops the client with code 0 instead of looping", async () => {
    const { c, errors } = mk({ token: jwt(Math.floor(Date.now() / 1000) - 10) });
    const drops: any[] = [];
    c.on("disconnected", (d) => drops.push(d));
    c.connect();
    await tick(20);
    assert.equal(sockets.length, 0);
    assert.equal(c.state, "disconnected");
    assert.deepEqual(drops.map((d) => [d.code, d.reconnect]), [[0, false]]);
    assert.match(errors[0].message, /token expired/);
  });

  it("disconnect() then connect() while getToken runs opens one socket, closed by disconnect()", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const { c } = mk({ token: undefined, getToken: async () => (await gate, inHour()) });
    c.connect();
    await tick();
    c.disconnect();
    c.connect();
    await tick();
    release();
    await tick(20);
    assert.equal(sockets.length, 1);
    c.disconnect();
    assert.equal(sockets.filter((s) => s.readyState === 1).length, 0);
  });
});

describe("liveness and retries", () => {
  it("a silent server is detected with a commandTimeoutMs under the probe's 10 s", async () => {
    const { c } = mk({ commandTimeoutMs: 30 });
    const drops: number[] = [];
    c.on("disconnected", (d) => drops.push(d.code));
    const s = await up(c, { ping_interval_ms: 20 });
    await tick(120);
    assert.ok(s.commands("ping").length >= 1);
    assert.equal(drops[0], 1006);
    assert.ok(sockets.length >= 2, "it reconnected");
  });

  it("publish, send and im.send carry a client_msg_id; a failure exposes it for the retry", async () => {
    const { c } = mk();
    const s = await up(c);
    const p = c.publish("chat:a", 1);
    const sd = c.send("b", 1, { clientMsgId: "mine" });
    const m = c.im.send({ to: "b", kind: "text", data: { text: "x" } });
    await tick();
    const keys = ["publish", "send", "msg_send"].map((k) => s.commands(k)[0].params.client_msg_id);
    assert.match(keys[0], /^[0-9a-f-]{32,36}$/);
    assert.equal(keys[1], "mine");
    assert.notEqual(keys[0], keys[2]);
    s.drop();
    const errs = await Promise.all([p, sd, m].map((x) => (x as Promise<unknown>).catch((e: RingcastError) => e)));
    assert.deepEqual(errs.map((e) => [(e as RingcastError).code, (e as RingcastError).clientMsgId]), [
      [1006, keys[0]],
      [1006, "mine"],
      [1006, keys[2]],
    ]);
  });
});
