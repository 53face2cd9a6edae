/**
 * What the SDK does after the connection closed with a code, from the table
 * "Close codes" in docs/protocol.md:
 *
 * - `reconnect`: reconnect with backoff, positions kept.
 * - `reconnect-now`: reconnect without waiting (1012, a drained node whose
 *   peers take the connection); backoff applies only if that fails.
 * - `new-token`: get a token from `getToken`, then reconnect (4001, 4002);
 *   without `getToken` this is a stop.
 * - `stop`: do not reconnect; the app decides (the server or its backend
 *   decided, or reconnecting would only repeat a client bug).
 */
export type CloseAction = "reconnect" | "reconnect-now" | "new-token" | "stop";

export interface CloseRule {
  action: CloseAction;
  /** The smallest delay before the first reconnect, in ms. */
  minDelayMs?: number;
}

/** 4008 means "back off": the first retry waits at least this long. */
export const RATE_LIMIT_ABUSE_DELAY_MS = 5000;

export function classifyClose(code: number): CloseRule {
  switch (code) {
    // 1000: the engine never sends it; from something in front of the
    // server (a proxy restarting) it means nothing about the client.
    case 1000:
      return { action: "reconnect" };
    case 1001: // server going away (shutdown, restart)
      return { action: "reconnect" };
    // The server found this client's frames broken: reconnecting would send
    // the same frames again. "Fix the client."
    case 1002:
    case 1003:
    case 1007:
      return { action: "stop" };
    case 1008: // policy violation: a refusal, not a failure
      return { action: "stop" };
    // Too big: the command that was too big fails (its promise rejects with
    // 1009); the connection itself is fine to reopen.
    case 1009:
      return { action: "reconnect" };
    case 1011: // internal error
      return { action: "reconnect" };
    case 1012: // service restart (drain): the port's other processes take it
      return { action: "reconnect-now" };
    case 1013: // try again later (slow consumer, connect proxy trouble)
      return { action: "reconnect" };
    case 4001: // token expired
    case 4002: // unauthorized
      return { action: "new-token" };
    case 4003: // disconnected by the server API: do not reconnect automatically
      return { action: "stop" };
    case 4005: // heartbeat timeout
      return { action: "reconnect" };
    case 4006: // a command with no readable id: a client bug
      return { action: "stop" };
    case 4007: // read timeout (a frame arrived in part)
      return { action: "reconnect" };
    case 4008: // rate limit abuse: reconnect only after backing off
      return { action: "reconnect", minDelayMs: RATE_LIMIT_ABUSE_DELAY_MS };
    case 4009: // a proxy backend disconnected the client: the app decided
      return { action: "stop" };
    case 4403: // connect denied by the connect proxy's backend
      return { action: "stop" };
  }
  // 4500-4999 are the app's own (a proxy backend's `disconnect`); the SDK
  // cannot know what they mean, and other unlisted 4xxx codes are Ringcast's
  // future refusals, so both stop. Everything else (1005 no status, 1006 no
  // close frame: a network failure or a killed server, 1014, 1015) is a
  // transport failure: reconnect.
  if (code >= 4000 && code <= 4999) return { action: "stop" };
  return { action: "reconnect" };
}
