import { backoffDelay, type BackoffOptions } from "./backoff.js";
import { classifyClose } from "./close-codes.js";
import { Emitter } from "./emitter.js";
import { CLIENT_ERROR, RingcastError } from "./errors.js";
import { Im } from "./im.js";
import { Subscription, type SubscribeOptions } from "./subscription.js";
import { StreamTracker, buildConnectUrl, refreshDelayMs, tokenExpiryMs } from "./tracker.js";
import type {
  ConnectInfo,
  DisconnectInfo,
  HistoryOptions,
  HistoryResult,
  ImEvent,
  ImSync,
  Publication,
  PublishResult,
  Recovery,
  StreamPosition,
} from "./types.js";

/** The part of the browser's WebSocket API the SDK uses (`ws` has it too). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: any) => void) | null;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface ClientOptions {
  /** The WebSocket endpoint, e.g. ws://127.0.0.1:8080/connection/websocket. */
  url: string;
  /** The connection JWT. */
  token?: string;
  /** Gives a new token: for `refresh` before expiry, and to reconnect after 4001/4002. */
  getToken?: () => Promise<string>;
  /** This installation's stable id: the server keeps its inbox cursor; the SDK acks. */
  device?: string;
  /** Where a device with no cursor starts: "live" (default) or "oldest". */
  deviceStart?: "live" | "oldest";
  /** An inbox position the app stored, to recover from at the first connect. */
  inbox?: StreamPosition;
  /** An IM sync token the app stored, for the first connect's `im_since`. */
  imSince?: string;
  /** The WebSocket constructor; default `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  reconnect?: BackoffOptions;
  /** Refresh the token this long before it expires (at most half its life). Default 30000. */
  refreshMarginMs?: number;
  /** A command unanswered this long rejects with code 0. Default 15000. */
  commandTimeoutMs?: number;
  /** Ack pushes of conversations from other users (delivery receipts). Default true. */
  ackConversations?: boolean;
}

export type ClientState = "disconnected" | "connecting" | "connected";

export interface ClientEvents {
  connecting: (ev: { attempt: number; delayMs: number }) => void;
  connected: (info: ConnectInfo) => void;
  disconnected: (ev: DisconnectInfo) => void;
  publication: (p: Publication) => void;
  recovery: (ev: { channel: string; recovery: Recovery & { truncated?: boolean } }) => void;
  im: (ev: ImEvent) => void;
  serverSubscribed: (ev: { channel: string }) => void;
  serverUnsubscribed: (ev: { channel: string }) => void;
  error: (err: RingcastError) => void;
}

interface AckState {
  /** The highest offset delivered to the app. */
  want: number;
  /** The highest offset the server confirmed. */
  sent: number;
  busy: boolean;
  /** Settles when the ack in flight does. */
  flight?: Promise<unknown>;
}

interface Pending {
  resolve: (v: any) => void;
  reject: (e: RingcastError) => void;
  timer: ReturnType<typeof setTimeout>;
  /** The frame, until it is written to a socket. */
  frame?: string;
}

const OPEN = 1;
const CONVERSATION = /^(dm|grp):/;
/** The server's catchup takes at most this many conversations at once. */
const CATCHUP_MAX_CONVS = 100;
/** How long the SDK waits for its liveness `ping` when the server has gone quiet. */
const PING_REPLY_TIMEOUT_MS = 10000;

/**
 * One logical connection to Ringcast: it connects, keeps the token fresh,
 * reconnects when the close code says to, and carries subscriptions and
 * stream positions across reconnects.
 */
export class Client extends Emitter<ClientEvents> {
  readonly im: Im;
  private readonly opts: ClientOptions;
  private readonly WS: WebSocketConstructor;
  private ws: WebSocketLike | undefined;
  private _state: ClientState = "disconnected";
  /** True when the SDK must not reconnect: before connect(), after disconnect() or a stop code. */
  private stopped = true;
  private token: string | undefined;
  private needNewToken = false;
  private attempt = 0;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly subs = new Map<string, Subscription>();
  /** Channels unsubscribed whose reply has not come: their late pushes are dropped. */
  private readonly leaving = new Set<string>();
  private readonly inbox: StreamTracker;
  private readonly convs = new Map<string, StreamTracker>();
  private readonly acks = new Map<string, AckState>();
  private imToken: string | undefined;
  private info: ConnectInfo | undefined;
  /** A device id for this Client when the app gave none (see openSocket). */
  private readonly ephemeralDevice = "sdk-" + Math.random().toString(36).slice(2, 12);
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private livenessTimer: ReturnType<typeof setInterval> | undefined;
  private lastReceived = 0;

  constructor(options: ClientOptions) {
    super();
    this.opts = options;
    const WS = options.WebSocket ?? (globalThis as any).WebSocket;
    if (!WS) {
      throw new RingcastError(CLIENT_ERROR, "no WebSocket implementation: pass options.WebSocket (e.g. the ws package)");
    }
    this.WS = WS;
    this.token = options.token;
    this.inbox = new StreamTracker(options.inbox);
    this.imToken = options.imSince;
    this.im = new Im(this);
  }

  get state(): ClientState {
    return this._state;
  }
  get user(): string | undefined {
    return this.info?.user;
  }
  get clientId(): string | undefined {
    return this.info?.clientId;
  }
  /** The inbox position of the last push delivered (store it to resume after a restart). */
  get inboxPosition(): StreamPosition | undefined {
    return this.inbox.position;
  }
  /** The newest IM sync token (store it for the next session's `imSince`). */
  get imSyncToken(): string | undefined {
    return this.imToken;
  }

  /** Starts connecting; a no-op when already connecting or connected. */
  connect(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.attempt = 0;
    this.setState("connecting");
    void this.openSocket();
  }

  /** Closes the connection and stops reconnecting. Subscriptions are kept for the next connect(). */
  disconnect(): void {
    if (this.stopped && this._state === "disconnected") return;
    this.stopped = true;
    const ws = this.ws;
    this.teardown(1000, "disconnect() called", false);
    if (ws) {
      try {
        ws.close(1000, "client disconnect");
      } catch {
        // already closing
      }
    }
  }

  subscribe(channel: string, options: SubscribeOptions = {}): Subscription {
    if (this.subs.has(channel)) throw new RingcastError(CLIENT_ERROR, `already subscribed to ${channel}`);
    this.leaving.delete(channel);
    const sub = new Subscription(this, channel, options);
    this.subs.set(channel, sub);
    if (this.socketOpen()) sub._start();
    return sub;
  }

  getSubscription(channel: string): Subscription | undefined {
    return this.subs.get(channel);
  }

  publish(channel: string, data: unknown, options: { clientMsgId?: string } = {}): Promise<PublishResult> {
    return this.call("publish", { channel, ...payload(data), ...msgId(options.clientMsgId) });
  }

  send(user: string, data: unknown, options: { clientMsgId?: string } = {}): Promise<PublishResult> {
    return this.call("send", { user, ...payload(data), ...msgId(options.clientMsgId) });
  }

  history(stream: string, options: HistoryOptions = {}): Promise<HistoryResult> {
    const params: Record<string, unknown> = { stream };
    if (options.since !== undefined) params.since = options.since;
    if (options.limit !== undefined) params.limit = options.limit;
    if (options.reverse !== undefined) params.reverse = options.reverse;
    if (options.before !== undefined) params.before = options.before;
    if (options.fromTime !== undefined) params.from_time = options.fromTime;
    if (options.beforeTime !== undefined) params.before_time = options.beforeTime;
    return this.call("history", params);
  }

  /** Calls the app's backend through the server's rpc proxy; resolves to its data. */
  async rpc(method: string, data?: unknown): Promise<unknown> {
    const result = await this.call<{ data?: unknown; b64data?: string }>("rpc", {
      method,
      ...(data === undefined ? {} : payload(data)),
    });
    return result.b64data !== undefined ? { b64data: result.b64data } : result.data ?? null;
  }

  ack(stream: string, offset: number): Promise<Record<string, never>> {
    return this.call("ack", { stream, offset });
  }

  /**
   * Resolves once the server has stored the acks of everything delivered
   * so far (the inbox with a `device`, conversations): call it before
   * closing a page or logging out, so that the next session of this
   * device does not get those publications again.
   */
  async flushAcks(): Promise<void> {
    for (;;) {
      const waiting = [...this.acks.values()].filter((a) => a.busy && a.flight);
      if (waiting.length === 0) return;
      await Promise.all(waiting.map((a) => a.flight));
    }
  }

  /** An application-level round trip; resolves to its duration in ms. */
  async ping(): Promise<number> {
    const start = Date.now();
    await this.call("ping");
    return Date.now() - start;
  }

  /**
   * Sends a command; resolves to its result or rejects with the server's
   * error. @internal for the SDK's own modules, but usable for commands
   * this version does not wrap.
   */
  call<T = any>(method: string, params?: Record<string, unknown>): Promise<T> {
    if (this.stopped) {
      return Promise.reject(new RingcastError(CLIENT_ERROR, `not connected: ${method} was not sent`));
    }
    const id = this.nextId++;
    const frame = JSON.stringify(params === undefined ? { id, method } : { id, method, params });
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RingcastError(CLIENT_ERROR, `${method}: no reply within ${this.commandTimeoutMs} ms`));
      }, this.commandTimeoutMs);
      const p: Pending = { resolve, reject, timer, frame };
      this.pending.set(id, p);
      if (this.socketOpen()) this.write(p);
    });
  }

  // ---- internals shared with Subscription and Im ----

  /** @internal */
  _dropSubscription(channel: string, sendUnsubscribe: boolean): void {
    this.subs.delete(channel);
    if (!sendUnsubscribe || !this.socketOpen()) return;
    this.leaving.add(channel);
    this.call("unsubscribe", { channel })
      .catch(() => undefined) // 108: the server had dropped it already
      .finally(() => this.leaving.delete(channel));
  }

  /** @internal */
  _connected(): boolean {
    return this._state === "connected";
  }

  /** @internal */
  _reportError(err: RingcastError): void {
    if (this.listenerCount("error") > 0) this.emit("error", err);
  }

  /** @internal: a backoff delay with the client's settings. */
  _backoff(attempt: number): number {
    return backoffDelay(attempt, this.opts.reconnect);
  }

  // ---- connection ----

  private get commandTimeoutMs(): number {
    return this.opts.commandTimeoutMs ?? 15000;
  }

  private socketOpen(): boolean {
    return this.ws !== undefined && this.ws.readyState === OPEN;
  }

  private setState(state: ClientState): void {
    this._state = state;
  }

  private write(p: Pending): void {
    if (p.frame === undefined) return;
    this.ws!.send(p.frame);
    p.frame = undefined;
  }

  private async openSocket(): Promise<void> {
    if (this.stopped) return;
    if (this.opts.getToken && this.tokenStale()) {
      try {
        this.token = await this.opts.getToken();
        this.needNewToken = false;
      } catch (e) {
        this._reportError(new RingcastError(CLIENT_ERROR, `getToken failed: ${(e as Error)?.message ?? e}`));
        this.scheduleReconnect(this._backoff(this.attempt++));
        return;
      }
      if (this.stopped) return;
    }
    // The inbox position must come from the server at connect, when its
    // live pushes are held back for the recovery: a position learned later
    // (from a push or `history`) can cross a push in flight. A `device`
    // makes the server answer with the position even when it has no cursor
    // (a device's first connection), so a Client without one names a device
    // of its own; it acks nothing there.
    const position = this.inbox.position;
    const url = buildConnectUrl(this.opts.url, {
      token: this.token,
      device: this.opts.device ?? (position ? undefined : this.ephemeralDevice),
      deviceStart: this.opts.device ? this.opts.deviceStart : undefined,
      inbox: position,
      imSince: this.imToken,
    });
    let ws: WebSocketLike;
    try {
      ws = new this.WS(url, ["ringcast.json.v1"]);
    } catch (e) {
      this._reportError(new RingcastError(CLIENT_ERROR, `cannot open WebSocket: ${(e as Error)?.message ?? e}`));
      this.scheduleReconnect(this._backoff(this.attempt++));
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.lastReceived = Date.now();
      // Resubscribe first: commands are processed in order, so the app's
      // queued commands then see the subscriptions in place.
      for (const sub of this.subs.values()) sub._start();
      for (const p of this.pending.values()) this.write(p);
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.lastReceived = Date.now();
      let msg: any;
      try {
        msg = JSON.parse(typeof ev.data === "string" ? ev.data : String(ev.data));
      } catch {
        this._reportError(new RingcastError(CLIENT_ERROR, "a server message is not JSON"));
        return;
      }
      this.handle(msg);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.teardown(ev.code, ev.reason ?? "", true);
    };
    ws.onerror = () => {
      // The close event follows with the code; nothing to do here.
    };
  }

  /** Whether the token held cannot be used for a new connection. */
  private tokenStale(): boolean {
    if (this.needNewToken || !this.token) return true;
    const exp = tokenExpiryMs(this.token);
    return exp !== undefined && exp <= Date.now() + 1000;
  }

  /**
   * The connection is gone (or being dropped): fail what waited on it,
   * decide from the close code whether to reconnect.
   */
  private teardown(code: number, reason: string, fromSocket: boolean): void {
    const ws = this.ws;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    }
    this.ws = undefined;
    this.clearTimers();
    const closed = new RingcastError(code, `connection closed with ${code}${reason ? `: ${reason}` : ""}`);
    for (const [id, p] of this.pending) {
      // A command not yet written waits for the next socket, unless no
      // socket will come.
      if (p.frame !== undefined && !this.stopped && fromSocket) continue;
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(closed);
    }
    for (const a of this.acks.values()) a.busy = false;
    for (const sub of this.subs.values()) sub._connectionLost();
    const wasConnected = this._state === "connected";
    if (!fromSocket || this.stopped) {
      this.stopped = true;
      this.setState("disconnected");
      this.emit("disconnected", { code, reason, reconnect: false });
      return;
    }
    const rule = classifyClose(code);
    let action = rule.action;
    if (action === "new-token") {
      if (this.opts.getToken) this.needNewToken = true;
      else action = "stop";
    }
    if (action === "stop") {
      this.stopped = true;
      this.setState("disconnected");
      for (const [id, p] of this.pending) {
        clearTimeout(p.timer);
        this.pending.delete(id);
        p.reject(closed);
      }
      this.emit("disconnected", { code, reason, reconnect: false });
      return;
    }
    this.setState("connecting");
    this.emit("disconnected", { code, reason, reconnect: true });
    let delay: number;
    if (action === "reconnect-now" && wasConnected) delay = 0;
    else delay = this._backoff(this.attempt);
    if (rule.minDelayMs !== undefined) delay = Math.max(delay, rule.minDelayMs);
    this.attempt++;
    this.scheduleReconnect(delay);
  }

  private scheduleReconnect(delayMs: number): void {
    if (this.stopped) return;
    this.setState("connecting");
    this.emit("connecting", { attempt: this.attempt, delayMs });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      void this.openSocket();
    }, delayMs);
  }

  private clearTimers(): void {
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    if (this.livenessTimer) clearInterval(this.livenessTimer);
    this.reconnectTimer = this.refreshTimer = this.livenessTimer = undefined;
  }

  /** Drops the socket as if the server had closed it without a close frame. */
  private abandon(reason: string): void {
    const ws = this.ws;
    this.teardown(1006, reason, true);
    try {
      ws?.close(4000, reason);
    } catch {
      // already closed
    }
  }

  // ---- server messages ----

  private handle(msg: any): void {
    if (msg.push) return this.route(msg.push as Publication);
    if (typeof msg.id === "number") return this.reply(msg);
    if (msg.connect) return this.onConnect(msg.connect);
    if (msg.im_sync) return this.onSync(msg.im_sync as ImSync);
    if (msg.subscribed) return this.emit("serverSubscribed", { channel: msg.subscribed.channel });
    if (msg.unsubscribed) return this.emit("serverUnsubscribed", { channel: msg.unsubscribed.channel });
    for (const type of ["read", "receipt", "typing", "delivered", "block", "presence"] as const) {
      if (msg[type]) return this.emit("im", { type, ...msg[type] });
    }
    // A message this version does not know: newer servers may add some.
  }

  private reply(msg: { id: number; result?: any; error?: { code: number; message: string; retry_after_ms?: number } }): void {
    if (msg.id === 0) {
      // A recovery the server did at connect (the inbox) or for a
      // server-side subscription of this device.
      if (msg.error) {
        this._reportError(new RingcastError(msg.error.code, `recovery at connect failed: ${msg.error.message}`));
        return;
      }
      const { channel, recovery } = msg.result as { channel: string; recovery?: Recovery };
      if (!recovery) return;
      if (channel === this.inboxChannel()) this.inbox.applyRecovery(recovery);
      this.emit("recovery", { channel, recovery });
      return;
    }
    const p = this.pending.get(msg.id);
    if (!p) return; // timed out already
    this.pending.delete(msg.id);
    clearTimeout(p.timer);
    if (msg.error) p.reject(new RingcastError(msg.error.code, msg.error.message, msg.error.retry_after_ms));
    else p.resolve(msg.result ?? {});
  }

  private onConnect(c: { client: string; user: string; expires?: number; ping_interval_ms: number; shard: number }): void {
    this.info = {
      clientId: c.client,
      user: c.user,
      ...(c.expires ? { expiresAtMs: c.expires } : {}),
      pingIntervalMs: c.ping_interval_ms,
      shard: c.shard,
    };
    this.attempt = 0;
    this.setState("connected");
    if (c.expires) this.scheduleRefresh(c.expires);
    this.startLiveness(c.ping_interval_ms);
    this.emit("connected", { ...this.info });
  }

  private inboxChannel(): string | undefined {
    return this.info?.user ? `user:${this.info.user}` : undefined;
  }

  private route(pub: Publication): void {
    const sub = this.subs.get(pub.channel);
    if (sub) return sub._deliver(pub);
    if (this.leaving.has(pub.channel)) return;
    if (pub.channel === this.inboxChannel()) {
      if (!this.inbox.accept(pub)) return;
      this.emit("publication", pub);
      if (this.opts.device && pub.offset) this.scheduleAck(pub.channel, pub.offset);
      return;
    }
    if (CONVERSATION.test(pub.channel) && pub.offset) {
      let t = this.convs.get(pub.channel);
      if (!t) this.convs.set(pub.channel, (t = new StreamTracker()));
      if (!t.accept(pub)) return;
      this.emit("publication", pub);
      if ((this.opts.ackConversations ?? true) && pub.sender !== this.info?.user) {
        this.scheduleAck(pub.channel, pub.offset);
      }
      return;
    }
    this.emit("publication", pub);
  }

  /**
   * Acks `offset` of `stream`, after the app's listeners ran. Acks are
   * cumulative, so a burst of pushes needs one ack of the last: one ack per
   * stream is in flight at a time and the next carries the newest offset.
   */
  private scheduleAck(stream: string, offset: number): void {
    let a = this.acks.get(stream);
    if (!a) this.acks.set(stream, (a = { want: 0, sent: 0, busy: false }));
    if (offset <= a.want) return;
    a.want = offset;
    if (!a.busy) this.flushAck(stream, a);
  }

  private flushAck(stream: string, a: AckState): void {
    if (a.want <= a.sent || !this.socketOpen()) return;
    a.busy = true;
    const offset = a.want;
    const ws = this.ws;
    a.flight = this.ack(stream, offset).then(
      () => {
        if (this.ws !== ws) return;
        a.sent = Math.max(a.sent, offset);
        a.busy = false;
        this.flushAck(stream, a);
      },
      (err: RingcastError) => {
        if (this.ws !== ws) return;
        a.busy = false;
        // A close rejects it too; the next connection's recovery covers that.
        if (err.code < 1000) this._reportError(err);
      },
    );
  }

  private onSync(sync: ImSync): void {
    this.imToken = sync.token;
    if (sync.reset) this.convs.clear();
    this.emit("im", { type: "sync", ...sync });
    void this.catchUpConversations(sync);
  }

  /**
   * After a reconnect, replays the conversations this Client delivered
   * pushes of and that moved while it was away, from the last offset it
   * delivered: the app then gets every message once, in order, as if the
   * connection had never dropped. Conversations it never saw pushes of are
   * the app's (the sync lists them).
   */
  private async catchUpConversations(sync: ImSync): Promise<void> {
    const from = [];
    for (const c of sync.convs) {
      const pos = this.convs.get(c.conv)?.position;
      if (pos && (c.last_offset > pos.offset || c.epoch !== pos.epoch)) {
        from.push({ conv: c.conv, since: pos.offset, epoch: pos.epoch });
      }
    }
    for (let i = 0; i < from.length; i += CATCHUP_MAX_CONVS) {
      let result;
      try {
        result = await this.im.catchup(from.slice(i, i + CATCHUP_MAX_CONVS));
      } catch (err) {
        const e = err as RingcastError;
        if (e.code < 1000) this._reportError(e);
        return;
      }
      for (const r of result.convs) {
        const { conv, truncated, ...recovery } = r;
        this.convs.get(conv)?.applyRecovery(recovery);
        if (!r.recovered || truncated) this.emit("recovery", { channel: conv, recovery: { ...recovery, truncated } });
      }
    }
  }

  // ---- token refresh and liveness ----

  private scheduleRefresh(expiresAtMs: number): void {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    if (!this.opts.getToken) return; // the server closes with 4001 at expiry; that stops the client
    const delay = refreshDelayMs(expiresAtMs, Date.now(), this.opts.refreshMarginMs ?? 30000);
    this.refreshTimer = setTimeout(() => void this.refresh(), delay);
  }

  private async refresh(): Promise<void> {
    const ws = this.ws;
    let token: string;
    try {
      token = await this.opts.getToken!();
    } catch (e) {
      // The server will close with 4001 at expiry; the reconnect asks again.
      this._reportError(new RingcastError(CLIENT_ERROR, `getToken failed: ${(e as Error)?.message ?? e}`));
      return;
    }
    if (this.ws !== ws || !this.socketOpen()) return;
    this.token = token;
    try {
      const r = await this.call<{ expires?: number }>("refresh", { token });
      if (this.ws !== ws) return;
      if (this.info) this.info.expiresAtMs = r.expires || undefined;
      if (r.expires) this.scheduleRefresh(r.expires);
    } catch (err) {
      const e = err as RingcastError;
      if (e.code < 1000) this._reportError(e);
    }
  }

  /**
   * Browsers answer the server's pings without telling the page, and the
   * server pings only a connection that sent nothing; so a connection whose
   * server went away without a close (a cable pulled) would look open for
   * as long as the OS keeps it. After a ping interval with nothing received
   * the SDK sends a `ping` command: no reply in time, and it reconnects.
   */
  private startLiveness(intervalMs: number): void {
    if (this.livenessTimer) clearInterval(this.livenessTimer);
    if (!intervalMs) return;
    const ws = this.ws;
    let probing = false;
    this.livenessTimer = setInterval(() => {
      if (this.ws !== ws || probing || Date.now() - this.lastReceived < intervalMs) return;
      probing = true;
      const timeout = setTimeout(() => {
        if (this.ws === ws) this.abandon("no reply to ping");
      }, PING_REPLY_TIMEOUT_MS);
      this.call("ping").then(
        () => {
          clearTimeout(timeout);
          probing = false;
        },
        () => clearTimeout(timeout),
      );
    }, intervalMs);
  }
}

function payload(data: unknown): { data?: unknown; b64data?: string } {
  if (data instanceof Uint8Array) {
    let s = "";
    for (let i = 0; i < data.length; i += 0x8000) {
      s += String.fromCharCode(...data.subarray(i, i + 0x8000));
    }
    return { b64data: btoa(s) };
  }
  return { data };
}

function msgId(id: string | undefined): { client_msg_id?: string } {
  return id === undefined ? {} : { client_msg_id: id };
}
