import type { Client } from "./client.js";
import { Emitter } from "./emitter.js";
import { RingcastError } from "./errors.js";
import { StreamTracker } from "./tracker.js";
import type { Publication, Recovery, StreamPosition } from "./types.js";

export interface SubscribeOptions {
  /** Recover from this position (the last publication the app processed). */
  since?: StreamPosition;
  /** A subscription token, for namespaces with `subscribe = "token"`. */
  token?: string;
}

export interface SubscribedEvent {
  channel: string;
  /**
   * True: nothing was missed. False: a gap the app must fill (reload):
   * the position's epoch is gone, it was trimmed, or, on a channel without
   * history, this is a resubscribe after a disconnect.
   */
  recovered: boolean;
  /** False for the first subscribe, true after a reconnect. */
  resubscribed: boolean;
  /** The server's recovery summary (channels with history only). */
  recovery?: Recovery;
}

export interface SubscriptionEvents {
  publication: (p: Publication) => void;
  subscribed: (ev: SubscribedEvent) => void;
  error: (err: RingcastError) => void;
}

export type SubscriptionState = "subscribing" | "subscribed" | "unsubscribed";

/** Errors after which a subscribe is worth retrying: store down (111), a limit or overload (106). */
const RETRYABLE = new Set([106, 111]);

/**
 * A channel subscription that outlives connections: after every reconnect
 * it subscribes again from the last position it delivered.
 */
export class Subscription extends Emitter<SubscriptionEvents> {
  readonly channel: string;
  private readonly client: Client;
  private readonly token: string | undefined;
  private readonly tracker: StreamTracker;
  /** Whether the channel keeps history; known from the first reply. */
  private durable: boolean;
  private _state: SubscriptionState = "subscribing";
  private everSubscribed = false;
  private retries = 0;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;

  /** @internal: use client.subscribe(). */
  constructor(client: Client, channel: string, options: SubscribeOptions) {
    super();
    this.client = client;
    this.channel = channel;
    this.token = options.token;
    this.tracker = new StreamTracker(options.since);
    this.durable = options.since !== undefined;
  }

  get state(): SubscriptionState {
    return this._state;
  }

  /** The position of the last publication delivered (channels with history). */
  get position(): StreamPosition | undefined {
    return this.tracker.position;
  }

  unsubscribe(): void {
    if (this._state === "unsubscribed") return;
    this._state = "unsubscribed";
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.client._dropSubscription(this.channel, true);
  }

  /** @internal: sends the subscribe on the current socket. */
  _start(): void {
    if (this._state === "unsubscribed") return;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this._state = "subscribing";
    const params: Record<string, unknown> = { channel: this.channel };
    const since = this.tracker.position;
    // `since` on a channel without history is error 107, so it goes only
    // where the server already said the channel keeps history (or the app
    // gave one).
    if (this.durable && since) params.since = since;
    if (this.token) params.token = this.token;
    const resubscribed = this.everSubscribed;
    this.client.call<{ channel: string; recovery?: Recovery }>("subscribe", params).then(
      (result) => {
        if (this._state === "unsubscribed") return;
        this._state = "subscribed";
        this.everSubscribed = true;
        this.retries = 0;
        const recovery = result.recovery;
        if (recovery) {
          this.durable = true;
          this.tracker.applyRecovery(recovery);
        }
        this.emit("subscribed", {
          channel: this.channel,
          recovered: recovery ? recovery.recovered : !resubscribed,
          resubscribed,
          ...(recovery ? { recovery } : {}),
        });
      },
      (err: RingcastError) => {
        if (this._state === "unsubscribed") return;
        if (err.code >= 1000) return; // the connection closed: the next one subscribes again
        this.emit("error", err);
        if (RETRYABLE.has(err.code) || err.code === 0) {
          this.retryTimer = setTimeout(() => {
            if (this.client._connected()) this._start();
          }, this.client._backoff(this.retries++));
          return;
        }
        this._state = "unsubscribed";
        this.client._dropSubscription(this.channel, false);
      },
    );
  }

  /** @internal */
  _connectionLost(): void {
    if (this._state === "subscribed") this._state = "subscribing";
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  /** @internal */
  _deliver(pub: Publication): void {
    if (this._state === "unsubscribed") return;
    if (!this.tracker.accept(pub)) return;
    this.emit("publication", pub);
  }
}
