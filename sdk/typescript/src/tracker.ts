import type { Publication, Recovery, StreamPosition } from "./types.js";

/**
 * The position of one durable stream as far as the app has been given it:
 * the offset and epoch of the last publication delivered. It decides which
 * pushes to deliver (each offset once per epoch) and where to recover from
 * after a reconnect.
 */
export class StreamTracker {
  private pos: StreamPosition | undefined;

  constructor(start?: StreamPosition) {
    if (start) this.pos = { offset: start.offset, epoch: String(start.epoch) };
  }

  get position(): StreamPosition | undefined {
    return this.pos ? { ...this.pos } : undefined;
  }

  /**
   * Whether to deliver `pub`, recording its position if so. A push of the
   * same epoch at or below the position was delivered already: the server
   * repeats one when a live push crossed a replay (inbox recovery by
   * `subscribe`, `catchup`), and dropping it is what protocol.md asks. A
   * push of another epoch means the stream was reset: its offsets start
   * over, so it is delivered and its position adopted.
   */
  accept(pub: Publication): boolean {
    if (pub.offset === undefined || pub.offset === 0) return true; // not stored: live only
    const epoch = pub.epoch ?? "0";
    if (this.pos && this.pos.epoch === epoch && pub.offset <= this.pos.offset) return false;
    this.pos = { offset: pub.offset, epoch };
    return true;
  }

  /**
   * Takes the position a recovery summary reports. With `recovered: true`
   * the replayed pushes already moved the position there; with `false` the
   * stream continues live after `offset` (in `epoch`), so that is where
   * the next recovery must start, whatever the app held before.
   */
  applyRecovery(recovery: Recovery): void {
    const epoch = String(recovery.epoch);
    if (recovery.recovered && this.pos && this.pos.epoch === epoch && this.pos.offset > recovery.offset) {
      return; // a push newer than the summary already arrived (cannot go back)
    }
    this.pos = { offset: recovery.offset, epoch };
  }
}

export interface ConnectUrlOptions {
  token?: string;
  device?: string;
  deviceStart?: "live" | "oldest";
  /** Where to recover the inbox from (`since`/`epoch`). */
  inbox?: StreamPosition;
  imSince?: string;
}

/**
 * The connect URL: the token (browsers cannot set an Authorization header
 * on a WebSocket) and the inbox and IM positions to resume from.
 */
export function buildConnectUrl(base: string, o: ConnectUrlOptions): string {
  const params: string[] = [];
  const add = (k: string, v: string) => params.push(`${k}=${encodeURIComponent(v)}`);
  if (o.token) add("token", o.token);
  if (o.device) {
    add("device", o.device);
    if (o.deviceStart && o.deviceStart !== "live") add("device_start", o.deviceStart);
  }
  if (o.inbox) {
    add("since", String(o.inbox.offset));
    if (o.inbox.epoch && o.inbox.epoch !== "0") add("epoch", o.inbox.epoch);
  }
  if (o.imSince) add("im_since", o.imSince);
  if (params.length === 0) return base;
  return base + (base.includes("?") ? "&" : "?") + params.join("&");
}

/**
 * The `exp` of a JWT in Unix ms, without verifying it (the server does):
 * the SDK only needs to know whether a token it holds is already stale
 * before reconnecting with it. Undefined when it cannot be read.
 */
export function tokenExpiryMs(token: string): number | undefined {
  const part = token.split(".")[1];
  if (!part) return undefined;
  try {
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const json = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
    const exp = JSON.parse(json).exp;
    return typeof exp === "number" ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * How long from now to refresh a token that expires at `expiresAtMs`:
 * `marginMs` before it, or, for a token with less than twice the margin
 * left, half way to its expiry, so that a short-lived token is not
 * refreshed in a loop and still gets its refresh in time.
 */
export function refreshDelayMs(expiresAtMs: number, nowMs: number, marginMs: number): number {
  const left = expiresAtMs - nowMs;
  return Math.max(0, Math.round(Math.max(left - marginMs, left / 2)));
}
