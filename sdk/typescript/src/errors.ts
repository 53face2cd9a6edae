/**
 * The one error type the SDK throws and emits.
 *
 * `code` is, by range: 100-199 the server's error code from a command reply
 * (docs/protocol.md "Error codes"); 1000-4999 the WebSocket close code that
 * ended the connection a command was waiting on; 0 the SDK's own (not
 * connected, timed out, no token). The ranges do not overlap, so one number
 * is enough to branch on.
 */
export class RingcastError extends Error {
  readonly code: number;
  /** With 114 (rate limited): how long to wait before retrying. */
  readonly retryAfterMs?: number;
  /**
   * On a failed `publish`, `send` or `im.send`: the idempotency key it was
   * sent with (the app's, or one the SDK made). Retry with it, and the
   * server stores the message at most once even if the first try was
   * stored and only its reply was lost.
   */
  clientMsgId?: string;

  constructor(code: number, message: string, retryAfterMs?: number) {
    super(message);
    this.name = "RingcastError";
    this.code = code;
    if (retryAfterMs !== undefined) this.retryAfterMs = retryAfterMs;
  }
}

/** Codes of errors the SDK raises itself rather than relays. */
export const CLIENT_ERROR = 0;
