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
  /** `resubscribed`: this Client had it on an earlier connection (see docs/sdk.md on gaps). */
  serverSubscribed: (ev: { channel: string; resubscribed: boolean }) => void;
  serverUnsubscribed: (ev: { channel: string }) => void;
  error: (err: RingcastError) => void;
}

interface AckState {
  /** The highest offset delivered to the app. */
  want: number;
  /** The highest offset the server confirmed. */
  sent: number;
  busy: boolean;
  /**
   * A listener threw on a publication of the stream: no offset from there
   * on is acked by this Client, so the device gets it again next session.
   */
  held: boolean;
  /** Settles when the ack in flight does. */
  flight?: Promise<unknown>;
}

/** An entry of a conversation that came before the ones under it. */
interface Held {
  epoch: string;
  /** Absent: the app's own `echo: false` message, known from its reply. */
  pub?: Publication;
}

/**
 * A conversation as delivered to the app. Its position only moves by one:
 * an entry past `pos + 1` is held until the gap is read (`catchup`), so
 * that the app gets every entry once, in offset order.
 */
interface ConvState {
  pos?: StreamPosition;
  held: Map<number, Held>;
  /** A catchup of the conversation is in flight on this connection. */
  filling: boolean;
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
/** setTimeout takes a 32-bit signed delay; a longer one fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/**
 * Sockets in a row that closed before the server's `connect` message: past
 * this many, the token held is suspected (a browser reports an upgrade
 * refused with HTTP 401 as a plain 1006) and `getToken` is asked again.
 */
const FAILED_OPENS_BEFORE_NEW_TOKEN = 2;
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
  private readonly convs = new Map<string, ConvState>();
  /** Conversations waiting for the next catchup command. */
  private readonly fillQueue = new Set<string>();
  private fillScheduled = false;
  /** Server-side subscriptions (token `subs`, /api/subscribe) of this connection or the last. */
  private readonly serverSubs = new Map<string, StreamTracker>();
  private readonly acks = new Map<string, AckState>();
  /** Changes on every connect() and disconnect(): an openSocket of an older one gives up. */
  private generation = 0;
  /** Sockets in a row that closed without a `connect` message. */
  private failedOpens = 0;
  private gotConnect = false;
  private imToken: string | undefined;
  private info: ConnectInfo | undefined;
  /** The device id of this Client when the app gave none (see openSocket). */
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
    this.generation++;
    this.attempt = 0;
    this.failedOpens = 0;
    this.setState("connecting");
    void this.openSocket();
  }

  /** Closes the connection and stops reconnecting. Subscriptions are kept for the next connect(). */
  disconnect(): void {
    if (this.stopped && this._state === "disconnected") return;
    this.stopped = true;
    this.generation++;
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

  /** Without a `clientMsgId` the SDK makes one; a failure carries it as `err.clientMsgId`. */
  publish(channel: string, data: unknown, options: { clientMsgId?: string } = {}): Promise<PublishResult> {
    const key = options.clientMsgId ?? newMsgId();
    return this._keyed(key, this.call("publish", { channel, ...payload(data), client_msg_id: key }));
  }

  /** Without a `clientMsgId` the SDK makes one; a failure carries it as `err.clientMsgId`. */
  send(user: string, data: unknown, options: { clientMsgId?: string } = {}): Promise<PublishResult> {
    const key = options.clientMsgId ?? newMsgId();
    return this._keyed(key, this.call("send", { user, ...payload(data), client_msg_id: key }));
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
      const owed = [...this.acks.entries()].filter(([, a]) => a.want > a.sent);
      if (owed.length === 0) return;
      if (!this.socketOpen() || this._state !== "connected") {
        throw new RingcastError(CLIENT_ERROR, `not connected: ${owed.length} stream(s) not acked`);
      }
      for (const [stream, a] of owed) if (!a.busy) this.flushAck(stream, a);
      await Promise.all(owed.map(([, a]) => a.flight));
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

  /** @internal: puts the idempotency key on the command's error. */
  _keyed<T>(key: string, p: Promise<T>): Promise<T> {
    return p.catch((err) => {
      if (!(err instanceof RingcastError)) throw err;
      // A copy: a close rejects every command in flight with one error.
      const keyed = new RingcastError(err.code, err.message, err.retryAfterMs);
      keyed.clientMsgId = key;
      throw keyed;
    });
  }

  /** @internal: a key for a command the app gave none for. */
  _newMsgId(): string {
    return newMsgId();
  }

  /**
   * @internal: the reply of the app's own `msg_send` with `echo: false`.
   * This connection gets no push of it, so its offset moves the position
   * as if it had been delivered (the app has it from the reply).
   */
  _ownMessage(conv: string, offset: number, epoch: string): void {
    const s = this.convs.get(conv);
    if (!s) {
      this.convs.set(conv, { pos: { offset, epoch }, held: new Map(), filling: false });
      return;
    }
    this.takeConvEntry(conv, s, offset, epoch, undefined);
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
    const generation = this.generation;
    if (this.opts.getToken && this.tokenStale()) {
      let token: string;
      try {
        token = await this.opts.getToken();
      } catch (e) {
        if (this.generation !== generation || this.stopped) return;
        this._reportError(new RingcastError(CLIENT_ERROR, `getToken failed: ${(e as Error)?.message ?? e}`));
        this.scheduleReconnect(this._backoff(this.attempt++));
        return;
      }
      // disconnect() (and maybe connect()) while getToken ran: that call
      // owns the connection now; opening one here too would leak it.
      if (this.generation !== generation || this.stopped) return;
      this.token = token;
      this.needNewToken = false;
    } else if (!this.opts.getToken && this.token && this.tokenStale()) {
      // The upgrade would be refused (HTTP 401, seen as 1006) on every try.
      const err = new RingcastError(CLIENT_ERROR, "token expired and no getToken to renew it");
      this._reportError(err);
      this.stopped = true;
      this.generation++;
      this.setState("disconnected");
      for (const [id, p] of this.pending) {
        clearTimeout(p.timer);
        this.pending.delete(id);
        p.reject(err);
      }
      this.emit("disconnected", { code: CLIENT_ERROR, reason: err.message, reconnect: false });
      return;
    }
    // The inbox position must come from the server at connect, when its
    // live pushes are held back for the recovery: a position learned later
    // (from a push or `history`) can cross a push in flight. A `device`
    // makes the server answer with the position even when it has no cursor
    // (a device's first connection), so a Client without one names a device
    // of its own. It keeps that device on every connection: server-side
    // subscriptions resume from its cursors there (the SDK acks them), and
    // conversation acks land on one device instead of one per connection.
    const position = this.inbox.position;
    const url = buildConnectUrl(this.opts.url, {
      token: this.token,
      device: this.opts.device ?? this.ephemeralDevice,
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
    this.gotConnect = false;
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
    // Catchups in flight died with the socket; the held entries stay, and
    // the next connection's sync reads the gaps again.
    for (const c of this.convs.values()) c.filling = false;
    this.fillQueue.clear();
    for (const sub of this.subs.values()) sub._connectionLost();
    if (fromSocket && !this.gotConnect) this.failedOpens++;
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
    } else if (action !== "stop" && this.failedOpens >= FAILED_OPENS_BEFORE_NEW_TOKEN && this.opts.getToken) {
      // A token the server refuses at the upgrade (revoked, clock skew, an
      // exp the SDK cannot read) looks like a network failure; a fresh one
      // costs a call to the app's backend, while keeping it loops forever.
      this.needNewToken = true;
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
    if (msg.subscribed) return this.onServerSubscribed(msg.subscribed.channel);
    if (msg.unsubscribed) {
      this.serverSubs.delete(msg.unsubscribed.channel);
      this.acks.delete(msg.unsubscribed.channel);
      this.emit("serverUnsubscribed", { channel: msg.unsubscribed.channel });
      return;
    }
    for (const type of ["read", "receipt", "typing", "delivered", "block", "presence"] as const) {
      if (msg[type]) {
        this.emit("im", { type, ...msg[type] });
        return;
      }
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
      else this.serverSubs.get(channel)?.applyRecovery(recovery);
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
    this.failedOpens = 0;
    this.gotConnect = true;
    this.setState("connected");
    if (c.expires) this.scheduleRefresh(c.expires);
    this.startLiveness(c.ping_interval_ms);
    this.emit("connected", { ...this.info });
    // Acks cut off by the last disconnect: nothing else sends them again
    // until the stream's next push, which may never come.
    for (const [stream, a] of this.acks) if (!a.busy) this.flushAck(stream, a);
  }

  /**
   * A server-side subscription: at connect (token `subs`, again after each
   * reconnect) or from /api/subscribe. The SDK keeps its position and acks
   * it on this Client's device, so that after a reconnect the server
   * replays from there (protocol.md "Server-side subscriptions").
   */
  private onServerSubscribed(channel: string): void {
    const resubscribed = this.serverSubs.has(channel);
    if (!resubscribed) this.serverSubs.set(channel, new StreamTracker());
    this.emit("serverSubscribed", { channel, resubscribed });
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
      const ok = this.emit("publication", pub);
      if (this.opts.device && pub.offset) this.scheduleAck(pub.channel, pub.offset, ok);
      return;
    }
    if (CONVERSATION.test(pub.channel) && pub.offset) {
      let s = this.convs.get(pub.channel);
      if (!s) {
        // The first entry this Client sees of it: what came before is the
        // app's to load (the sync lists the conversation).
        this.convs.set(pub.channel, { pos: { offset: pub.offset, epoch: pub.epoch ?? "0" }, held: new Map(), filling: false });
        this.deliverConv(pub);
        return;
      }
      this.takeConvEntry(pub.channel, s, pub.offset, pub.epoch ?? "0", pub);
      return;
    }
    const server = this.serverSubs.get(pub.channel);
    if (server) {
      if (!server.accept(pub)) return;
      const ok = this.emit("publication", pub);
      if (pub.offset) this.scheduleAck(pub.channel, pub.offset, ok);
      return;
    }
    this.emit("publication", pub);
  }

  /**
   * An entry of a conversation (a push, or the app's own `echo: false`
   * message): delivered if it is the next one, held if it comes after a
   * gap (which a catchup then reads), dropped if delivered already.
   */
  private takeConvEntry(conv: string, s: ConvState, offset: number, epoch: string, pub: Publication | undefined): void {
    const pos = s.pos;
    if (pos && epoch === pos.epoch && offset <= pos.offset) return;
    if (pos && epoch === pos.epoch && offset === pos.offset + 1) {
      pos.offset = offset;
      if (pub) this.deliverConv(pub);
      this.releaseHeld(conv, s);
      return;
    }
    // A gap, or another epoch (the conversation was reset: the catchup
    // from the old position reports it with recovered:false).
    s.held.set(offset, { epoch, ...(pub ? { pub } : {}) });
    if (!s.filling) this.requestFill(conv, s);
  }

  /** Delivers the held entries that now follow the position. */
  private releaseHeld(conv: string, s: ConvState): void {
    const pos = s.pos!;
    for (;;) {
      const next = s.held.get(pos.offset + 1);
      if (!next || next.epoch !== pos.epoch) break;
      s.held.delete(pos.offset + 1);
      pos.offset++;
      if (next.pub) this.deliverConv(next.pub);
    }
    for (const [offset, h] of s.held) if (h.epoch === pos.epoch && offset <= pos.offset) s.held.delete(offset);
    if (s.held.size > 0 && !s.filling) this.requestFill(conv, s);
  }

  private deliverConv(pub: Publication): void {
    const ok = this.emit("publication", pub);
    if ((this.opts.ackConversations ?? true) && pub.sender !== this.info?.user) {
      this.scheduleAck(pub.channel, pub.offset!, ok);
    }
  }

  /** Queues a catchup of `conv` from its position; one command carries all queued in a tick. */
  private requestFill(conv: string, s: ConvState): void {
    if (!s.pos || !this.socketOpen()) return;
    s.filling = true;
    this.fillQueue.add(conv);
    if (this.fillScheduled) return;
    this.fillScheduled = true;
    queueMicrotask(() => {
      this.fillScheduled = false;
      this.sendFills();
    });
  }

  private sendFills(): void {
    const names = [...this.fillQueue];
    this.fillQueue.clear();
    const ws = this.ws;
    for (let i = 0; i < names.length; i += CATCHUP_MAX_CONVS) {
      const batch = names
        .slice(i, i + CATCHUP_MAX_CONVS)
        .map((conv) => ({ conv, s: this.convs.get(conv) }))
        .filter((b): b is { conv: string; s: ConvState } => !!b.s?.filling && !!b.s.pos);
      if (batch.length === 0) continue;
      const from = batch.map(({ conv, s }) => ({ conv, since: s.pos!.offset, epoch: s.pos!.epoch }));
      this.im.catchup(from).then(
        (result) => {
          if (this.ws !== ws) return;
          for (const r of result.convs) {
            const s = batch.find((b) => b.conv === r.conv)?.s;
            if (s && this.convs.get(r.conv) === s) this.filled(r.conv, s, r);
          }
        },
        (err: RingcastError) => {
          // A close: teardown reset the flags; the next sync reads again.
          if (this.ws !== ws || err.code >= 1000) return;
          this._reportError(err);
          for (const { conv, s } of batch) if (this.convs.get(conv) === s) this.fillFailed(conv, s);
        },
      );
    }
  }

  /**
   * A catchup's reply: the entries it replayed came before it. Those the
   * server could give are all there (a window, such as a group rejoined
   * later, can leave holes), so the position moves to the summary's offset.
   */
  private filled(conv: string, s: ConvState, r: Recovery & { truncated: boolean }): void {
    s.filling = false;
    const { truncated, ...recovery } = r;
    const epoch = String(recovery.epoch);
    const pos = s.pos!;
    if (!recovery.recovered || epoch !== pos.epoch) {
      s.pos = { offset: recovery.offset, epoch };
      this.emit("recovery", { channel: conv, recovery: { ...recovery, epoch, truncated } });
    } else {
      const upTo = [...s.held.keys()].filter((o) => o <= recovery.offset && s.held.get(o)!.epoch === epoch).sort((a, b) => a - b);
      for (const offset of upTo) {
        const h = s.held.get(offset)!;
        s.held.delete(offset);
        pos.offset = offset;
        if (h.pub) this.deliverConv(h.pub);
      }
      if (recovery.offset > pos.offset) pos.offset = recovery.offset;
    }
    for (const [offset, h] of s.held) if (h.epoch !== s.pos!.epoch) s.held.delete(offset);
    this.releaseHeld(conv, s);
    // Cut at the server's limit: read on from the last one replayed.
    if (truncated && recovery.recovered && !s.filling) this.requestFill(conv, s);
  }

  /**
   * The catchup failed (not a close: 111, or 123 after leaving a group):
   * what is held is delivered, in order, rather than held for good, and a
   * `recovery` with `recovered: false` tells the app to reload the gap.
   */
  private fillFailed(conv: string, s: ConvState): void {
    s.filling = false;
    const pos = s.pos!;
    const entries = [...s.held.entries()].filter(([, h]) => h.epoch === pos.epoch).sort((a, b) => a[0] - b[0]);
    s.held.clear();
    for (const [offset, h] of entries) {
      pos.offset = offset;
      if (h.pub) this.deliverConv(h.pub);
    }
    this.emit("recovery", {
      channel: conv,
      recovery: { recovered: false, epoch: pos.epoch, offset: pos.offset, start_offset: 0, replayed: 0 },
    });
  }

  /**
   * Acks `offset` of `stream`, after the app's listeners ran. Acks are
   * cumulative, so a burst of pushes needs one ack of the last: one ack per
   * stream is in flight at a time and the next carries the newest offset.
   */
  private scheduleAck(stream: string, offset: number, listenersOk: boolean): void {
    let a = this.acks.get(stream);
    if (!a) this.acks.set(stream, (a = { want: 0, sent: 0, busy: false, held: false }));
    // Acks are cumulative: acking anything after a publication the app
    // failed on would acknowledge that one too.
    if (!listenersOk) a.held = true;
    if (a.held || offset <= a.want) return;
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
        // A close rejects it too: onConnect sends it again. A refusal (a
        // group left: 123) would be refused again, so it is given up.
        if (err.code < 1000) {
          a.sent = Math.max(a.sent, offset);
          this._reportError(err);
        }
      },
    );
  }

  /**
   * The sync at connect. A conversation this Client has a position in and
   * that moved past it (or changed epoch) is read from there with catchup;
   * with `more: true` the sync may have left some out, so every such
   * conversation not listed is read too (a catchup with nothing new costs
   * one store read). A conversation it has no position in is the app's
   * to load: its position is not taken from the sync, whose store read is
   * not ordered with the live pushes (a push it counts may come after it).
   */
  private onSync(sync: ImSync): void {
    this.imToken = sync.token;
    if (sync.reset) this.convs.clear();
    this.emit("im", { type: "sync", ...sync });
    const listed = new Set<string>();
    for (const c of sync.convs) {
      listed.add(c.conv);
      const s = this.convs.get(c.conv);
      if (!s || s.filling || !s.pos) continue;
      if (c.epoch !== s.pos.epoch || c.last_offset > s.pos.offset || s.held.size > 0) this.requestFill(c.conv, s);
    }
    for (const [conv, s] of this.convs) {
      if (listed.has(conv) || s.filling) continue;
      if (sync.more || s.held.size > 0) this.requestFill(conv, s);
    }
  }

  // ---- token refresh and liveness ----

  private scheduleRefresh(expiresAtMs: number): void {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    if (!this.opts.getToken) return; // the server closes with 4001 at expiry; that stops the client
    const delay = refreshDelayMs(expiresAtMs, Date.now(), this.opts.refreshMarginMs ?? 30000);
    if (delay > MAX_TIMER_MS) {
      // A token living past ~24.8 days: wait the longest a timer can, then look again.
      this.refreshTimer = setTimeout(() => this.scheduleRefresh(expiresAtMs), MAX_TIMER_MS);
      return;
    }
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
    try {
      const r = await this.call<{ expires?: number }>("refresh", { token });
      // Kept only once the server took it: a refused token (101: revoked,
      // another user's) would fail every reconnect.
      this.token = token;
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
        (err: RingcastError) => {
          clearTimeout(timeout);
          probing = false;
          // Code 0: the command timed out before the probe's own timer
          // (commandTimeoutMs under 10 s); the server is just as silent.
          if (err.code === CLIENT_ERROR && this.ws === ws) this.abandon("no reply to ping");
        },
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

/**
 * An idempotency key: a UUID where the platform has one (browsers only in
 * secure contexts), else 128 random bits from Math.random, which is enough
 * to keep one sender's keys apart within the server's dedup window.
 */
function newMsgId(): string {
  const c = (globalThis as any).crypto;
  if (c?.randomUUID) return c.randomUUID();
  let s = "";
  for (let i = 0; i < 4; i++) s += Math.floor(Math.random() * 2 ** 32).toString(16).padStart(8, "0");
  return s;
}
