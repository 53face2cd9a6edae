// The SDK against the real engine binary over real sockets.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import WebSocket from "ws";
import { Client, RingcastError, type ClientOptions, type ImEvent, type Publication } from "@ringcast/client";
import { CutProxy, Engine, mintToken, sleep, waitFor } from "./engine.js";

const clients: Client[] = [];

function client(engine: Engine, user: string, extra: Partial<ClientOptions> = {}): Client {
  const c = new Client({
    url: engine.wsUrl,
    token: mintToken(user),
    getToken: async () => mintToken(user),
    WebSocket: WebSocket as unknown as ClientOptions["WebSocket"],
    reconnect: { minDelayMs: 100, maxDelayMs: 1000 },
    ...extra,
  });
  clients.push(c);
  return c;
}

function connected(c: Client): Promise<void> {
  if (c.state === "connected") return Promise.resolve();
  return new Promise((res) => c.once("connected", () => res()));
}

async function open(engine: Engine, user: string, extra: Partial<ClientOptions> = {}): Promise<Client> {
  const c = client(engine, user, extra);
  c.connect();
  await connected(c);
  return c;
}

const offsets = (ps: Publication[]) => ps.map((p) => p.offset);

after(() => {
  for (const c of clients) c.disconnect();
});

describe("against one engine", () => {
  const engine = new Engine();
  before(() => engine.start());
  after(() => engine.dispose());

  it("connects, subscribes and gets what another client publishes, in order", async () => {
    const alice = await open(engine, "alice");
    const bob = await open(engine, "bob");
    assert.equal(alice.user, "alice");
    const got: Publication[] = [];
    const sub = alice.subscribe("chat:pubsub");
    sub.on("publication", (p) => got.push(p));
    const subscribed = await new Promise<any>((res) => sub.once("subscribed", res));
    assert.equal(subscribed.recovered, true);
    assert.equal(subscribed.resubscribed, false);
    assert.equal(subscribed.recovery.offset, 0);
    bob.subscribe("chat:pubsub"); // publish = "subscribers"
    await new Promise((res) => bob.getSubscription("chat:pubsub")!.once("subscribed", res));
    const results = [];
    for (let i = 1; i <= 3; i++) results.push(await bob.publish("chat:pubsub", { n: i }));
    assert.deepEqual(results.map((r) => r.offset), [1, 2, 3]);
    assert.match(results[0].epoch, /^[1-9][0-9]*$/);
    await waitFor(() => got.length === 3, "three publications");
    assert.deepEqual(got.map((p) => p.data), [{ n: 1 }, { n: 2 }, { n: 3 }]);
    assert.deepEqual(offsets(got), [1, 2, 3]);
    assert.equal(got[0].sender, "bob");
    assert.equal(got[0].id, results[0].id);
    assert.deepEqual(sub.position, { offset: 3, epoch: results[0].epoch });
    const page = await alice.history("chat:pubsub", { since: 1, limit: 10 });
    assert.deepEqual(offsets(page.publications), [2, 3]);
    // A live channel: no position, pushes still arrive.
    const live: Publication[] = [];
    alice.subscribe("room:live").on("publication", (p) => live.push(p));
    await alice.ping(); // in order after the subscribe
    await bob.publish("room:live", "x");
    await waitFor(() => live.length === 1, "the live publication");
    assert.equal(live[0].offset, undefined);
  });

  it("surfaces the server's error code and message", async () => {
    const c = await open(engine, "errors");
    await assert.rejects(c.publish("nowhere:x", 1), (e: unknown) => {
      assert.ok(e instanceof RingcastError);
      assert.equal(e.code, 102);
      assert.ok(e.message.length > 0);
      return true;
    });
    await assert.rejects(c.history("chat:x", { limit: 5000 }), { name: "RingcastError", code: 107 });
    await assert.rejects(c.im.read("dm:nope", 1), (e: RingcastError) => e.code === 107 || e.code === 123);
    const sub = c.subscribe("nowhere:y");
    const err = await new Promise<RingcastError>((res) => sub.once("error", res));
    assert.equal(err.code, 102);
    assert.equal(sub.state, "unsubscribed");
    assert.equal(c.getSubscription("nowhere:y"), undefined);
  });

  it("stops on 4003 (disconnected by the server API)", async () => {
    const c = await open(engine, "kicked");
    const ev = new Promise<any>((res) => c.once("disconnected", res));
    await engine.api("/api/disconnect", { user: "kicked" });
    const d = await ev;
    assert.equal(d.code, 4003);
    assert.equal(d.reconnect, false);
    assert.equal(c.state, "disconnected");
    await assert.rejects(c.ping(), { code: 0 });
  });

  it("refreshes a short-lived token before it expires, on the same connection", async () => {
    let minted = 0;
    const c = client(engine, "fresh", {
      token: mintToken("fresh", 3),
      getToken: async () => (minted++, mintToken("fresh", 3)),
    });
    const drops: number[] = [];
    c.on("disconnected", (d) => drops.push(d.code));
    c.connect();
    await connected(c);
    const id = c.clientId;
    await new Promise((r) => setTimeout(r, 4500)); // past the first token's exp
    assert.ok(minted >= 2, `getToken called ${minted} times`);
    assert.deepEqual(drops, []);
    assert.equal(c.clientId, id);
    await c.ping();
  });

  it("reconnects with a new token after 4001, subscriptions kept", async () => {
    let calls = 0;
    const c = client(engine, "expired", {
      token: mintToken("expired", 2),
      // The refresh fails (the backend is down), so the server closes with
      // 4001; the reconnect asks again and gets a token.
      getToken: async () => {
        calls++;
        if (calls === 1) throw new Error("backend down");
        return mintToken("expired", 3600);
      },
    });
    const errors: RingcastError[] = [];
    c.on("error", (e) => errors.push(e));
    const drops: any[] = [];
    c.on("disconnected", (d) => drops.push(d));
    const got: Publication[] = [];
    c.subscribe("chat:tok").on("publication", (p) => got.push(p));
    c.connect();
    await connected(c);
    const first = c.clientId;
    await waitFor(() => drops.length === 1, "the 4001 close", 8000);
    assert.equal(drops[0].code, 4001);
    assert.equal(drops[0].reconnect, true);
    await waitFor(() => c.state === "connected" && c.clientId !== first, "the reconnect");
    assert.equal(calls, 2);
    assert.match(errors[0].message, /backend down/);
    await waitFor(() => c.getSubscription("chat:tok")!.state === "subscribed", "the resubscribe");
    await engine.api("/api/publish", { channel: "chat:tok", data: { after: true } });
    await waitFor(() => got.length === 1, "a publication after the reconnect");
  });

  it("delivers a send to the user's inbox, and recovers the inbox by device cursor", async () => {
    const alice = await open(engine, "sender");
    const inbox: Publication[] = [];
    const recoveries: any[] = [];
    const bob1 = client(engine, "inboxbob", { device: "bob-phone" });
    bob1.on("publication", (p) => inbox.push(p));
    bob1.on("recovery", (r) => recoveries.push(r));
    bob1.connect();
    await waitFor(() => recoveries.length === 1, "the connect-time recovery");
    assert.equal(recoveries[0].channel, "user:inboxbob");
    assert.equal(recoveries[0].recovery.replayed, 0);
    const sent = [await alice.send("inboxbob", { n: 1 }), await alice.send("inboxbob", { n: 2 })];
    await waitFor(() => inbox.length === 2, "two inbox pushes");
    assert.equal(inbox[0].channel, "user:inboxbob");
    assert.equal(inbox[0].sender, "sender");
    assert.deepEqual(offsets(inbox), [sent[0].offset, sent[1].offset]);
    await bob1.flushAcks(); // the SDK acked what it delivered
    bob1.disconnect();
    for (let n = 3; n <= 5; n++) await alice.send("inboxbob", { n });
    // A new Client on the same device (another page load): it starts from
    // the device's cursor, with nothing the first one was given.
    const again: Publication[] = [];
    const rec2: any[] = [];
    const bob2 = client(engine, "inboxbob", { device: "bob-phone" });
    bob2.on("publication", (p) => again.push(p));
    bob2.on("recovery", (r) => rec2.push(r));
    bob2.connect();
    await waitFor(() => rec2.length === 1, "the second recovery");
    assert.equal(rec2[0].recovery.recovered, true);
    assert.equal(rec2[0].recovery.replayed, 3);
    assert.deepEqual(again.map((p) => p.data), [{ n: 3 }, { n: 4 }, { n: 5 }]);
    assert.deepEqual(bob2.inboxPosition, { offset: sent[1].offset + 3, epoch: sent[0].epoch });
  });

  it("IM: a DM between two clients, with typing, delivery and a read receipt", async () => {
    const aliceIm: ImEvent[] = [];
    const bobIm: ImEvent[] = [];
    const alice = client(engine, "im-alice");
    const bob = client(engine, "im-bob");
    alice.on("im", (e) => aliceIm.push(e));
    bob.on("im", (e) => bobIm.push(e));
    const bobMsgs: Publication[] = [];
    bob.on("publication", (p) => bobMsgs.push(p));
    alice.connect();
    bob.connect();
    await waitFor(() => aliceIm.some((e) => e.type === "sync") && bobIm.some((e) => e.type === "sync"), "both syncs");
    assert.ok(alice.imSyncToken, "the sync token is kept");

    const sent = await alice.im.send({ to: "im-bob", kind: "text", data: { text: "hi bob" }, clientMsgId: "m-1" });
    assert.match(sent.conv, /^dm:/);
    assert.equal(sent.offset, 1);
    await waitFor(() => bobMsgs.length === 1, "bob gets the message");
    assert.equal(bobMsgs[0].channel, sent.conv);
    assert.deepEqual(bobMsgs[0].data, { kind: "text", data: { text: "hi bob" } });
    // Bob's SDK acked the message: alice is told it was delivered.
    await waitFor(() => aliceIm.some((e) => e.type === "delivered"), "the delivered event");
    assert.deepEqual(aliceIm.find((e) => e.type === "delivered"), {
      type: "delivered", conv: sent.conv, user: "im-bob", offset: 1,
    });

    await bob.im.typing(sent.conv, "typing");
    await waitFor(() => aliceIm.some((e) => e.type === "typing"), "the typing event");
    assert.deepEqual(aliceIm.find((e) => e.type === "typing"), {
      type: "typing", conv: sent.conv, user: "im-bob", state: "typing",
    });

    const read = await bob.im.read(sent.conv, 1);
    assert.deepEqual(read, { conv: sent.conv, offset: 1, unread: 0, total_unread: 0 });
    await waitFor(() => aliceIm.some((e) => e.type === "receipt"), "the read receipt");
    assert.deepEqual(aliceIm.find((e) => e.type === "receipt"), {
      type: "receipt", conv: sent.conv, user: "im-bob", read: 1,
    });
    const list = await alice.im.convList();
    assert.equal(list.convs[0].conv, sent.conv);
    assert.equal(list.convs[0].peer, "im-bob");
    const receipts = await alice.im.receipts(sent.conv);
    assert.deepEqual(receipts.receipts.find((r) => r.user === "im-bob"), { user: "im-bob", read: 1, delivered: 1 });
    await alice.im.block("im-bob");
    await assert.rejects(bob.im.send({ to: "im-alice", kind: "text", data: { text: "?" } }), { code: 120 });
  });

  describe("through a connection that drops (1006)", () => {
    const proxy = new CutProxy(engine);
    before(() => proxy.start());
    after(() => proxy.stop());

    it("a DM keeps every message once, in order, across a reconnect, with messages sent while away and crossing the catchup", async () => {
      const alice = await open(engine, "gap-alice");
      const bob = client(engine, "gap-bob", { url: proxy.wsUrl });
      const got: Publication[] = [];
      bob.on("publication", (p) => {
        if (p.channel.startsWith("dm:")) got.push(p);
      });
      const text = (n: number) => ({ to: "gap-bob", kind: "text" as const, data: { text: `m${n}` } });
      let syncs = 0;
      let crossing: Promise<void> | undefined;
      bob.on("im", (e) => {
        if (e.type !== "sync" || ++syncs !== 2) return;
        // The sync after the reconnect: the SDK's catchup (from 3) is
        // written after this listener, and held on its way while alice
        // sends 7 to 9, whose live pushes reach bob before it.
        const release = proxy.holdUpstream();
        crossing = (async () => {
          for (let n = 7; n <= 9; n++) await alice.im.send(text(n));
          await sleep(100);
          release();
        })();
      });
      bob.connect();
      await waitFor(() => syncs === 1, "bob's first sync");
      for (let n = 1; n <= 3; n++) await alice.im.send(text(n));
      await waitFor(() => got.length === 3, "the first three messages");

      proxy.cut();
      await waitFor(() => bob.state !== "connected", "bob's drop");
      for (let n = 4; n <= 6; n++) await alice.im.send(text(n));
      proxy.restore();
      await waitFor(() => crossing !== undefined, "the sync after the reconnect");
      await crossing;
      await alice.im.send(text(10)); // and one after it all
      await waitFor(() => got.length >= 10, "all ten messages");
      await bob.ping(); // a late duplicate would arrive before this reply
      assert.deepEqual(offsets(got), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      assert.deepEqual(got.map((p) => (p.data as any).data.text), ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9", "m10"]);
    });

    it("a server-side subscription (token subs) resumes from the device's acked cursor after a reconnect", async () => {
      const subs = { subs: ["chat:srv"] };
      const c = client(engine, "srv-user", {
        url: proxy.wsUrl,
        token: mintToken("srv-user", 3600, subs),
        getToken: async () => mintToken("srv-user", 3600, subs),
        device: "srv-phone",
      });
      const got: Publication[] = [];
      const recoveries: any[] = [];
      const announced: any[] = [];
      c.on("publication", (p) => p.channel === "chat:srv" && got.push(p));
      c.on("recovery", (r) => r.channel === "chat:srv" && recoveries.push(r));
      c.on("serverSubscribed", (e) => announced.push(e));
      c.connect();
      await waitFor(() => announced.length === 1, "the server-side subscription");
      for (let n = 1; n <= 2; n++) await engine.api("/api/publish", { channel: "chat:srv", data: { n } });
      await waitFor(() => got.length === 2, "two live publications");
      await c.flushAcks();

      proxy.cut();
      await waitFor(() => c.state !== "connected", "the drop");
      for (let n = 3; n <= 4; n++) await engine.api("/api/publish", { channel: "chat:srv", data: { n } });
      proxy.restore();
      await waitFor(() => recoveries.length === 2, "the recovery after the reconnect");
      await c.ping();
      assert.deepEqual(announced.map((e) => e.resubscribed), [false, true]);
      assert.equal(recoveries[1].recovery.recovered, true);
      assert.equal(recoveries[1].recovery.replayed, 2);
      assert.deepEqual(got.map((p) => (p.data as any).n), [1, 2, 3, 4]);
    });
  });
});

describe("across engine restarts", () => {
  const engine = new Engine();
  before(() => engine.start());
  after(() => engine.dispose());

  it("recovers a subscription and the inbox with no gap and no duplicate, then reports recovered:false on a lost stream", async () => {
    // A fixed delay, so that the reconnect comes after the publications
    // made while the client was away: they must come by replay.
    const c = client(engine, "survivor", { reconnect: { minDelayMs: 1500, maxDelayMs: 1500, jitter: 0 } });
    const got: Publication[] = [];
    const inbox: Publication[] = [];
    const subscribed: any[] = [];
    const recoveries: any[] = [];
    const drops: any[] = [];
    const sub = c.subscribe("chat:durable");
    sub.on("publication", (p) => got.push(p));
    sub.on("subscribed", (e) => subscribed.push(e));
    c.on("publication", (p) => inbox.push(p));
    c.on("recovery", (r) => recoveries.push(r));
    c.on("disconnected", (d) => drops.push(d));
    c.connect();
    await waitFor(() => subscribed.length === 1, "the subscribe");
    for (let n = 1; n <= 3; n++) await engine.api("/api/publish", { channel: "chat:durable", data: { n } });
    await engine.api("/api/send", { user: "survivor", data: { n: 1 } });
    await waitFor(() => got.length === 3 && inbox.length === 1, "the first publications");

    await engine.restart(); // SIGTERM: the client gets 1001
    for (let n = 4; n <= 6; n++) await engine.api("/api/publish", { channel: "chat:durable", data: { n } });
    await engine.api("/api/send", { user: "survivor", data: { n: 2 } });
    assert.equal(drops[0].code, 1001);
    assert.equal(drops[0].reconnect, true);
    await waitFor(() => subscribed.length === 2, "the resubscribe");
    assert.equal(subscribed[1].resubscribed, true);
    assert.equal(subscribed[1].recovered, true);
    assert.equal(subscribed[1].recovery.replayed, 3);
    await engine.api("/api/publish", { channel: "chat:durable", data: { n: 7 } });
    await waitFor(() => got.length === 7, "seven publications");
    await c.ping(); // a late duplicate would arrive before this reply
    assert.deepEqual(got.map((p) => (p.data as any).n), [1, 2, 3, 4, 5, 6, 7]);
    assert.deepEqual(offsets(got), [1, 2, 3, 4, 5, 6, 7]);
    await waitFor(() => inbox.length === 2, "the inbox send made while away");
    assert.deepEqual(inbox.map((p) => (p.data as any).n), [1, 2]);
    const inboxRec = recoveries.filter((r) => r.channel === "user:survivor");
    assert.equal(inboxRec.at(-1).recovery.recovered, true);

    // The store is lost (a fresh data dir): the positions the client holds
    // cannot be continued, and the SDK says so instead of going on silently.
    await engine.restart(true, "SIGKILL");
    await waitFor(() => subscribed.length === 3, "the resubscribe after the loss");
    assert.equal(subscribed[2].recovered, false);
    assert.equal(drops[1].code, 1006);
    await waitFor(() => recoveries.some((r) => r.channel === "user:survivor" && !r.recovery.recovered), "inbox recovered:false");
    const fresh = await engine.api("/api/publish", { channel: "chat:durable", data: { n: 1 } });
    await waitFor(() => got.length === 8, "the new stream's first publication");
    assert.equal(got[7].offset, 1);
    assert.equal(got[7].epoch, fresh.epoch);
    assert.deepEqual(sub.position, { offset: 1, epoch: fresh.epoch });
  });
});
