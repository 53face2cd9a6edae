/** Reconnect backoff settings (all optional in the client options). */
export interface BackoffOptions {
  /** The first delay, in ms. Default 500. */
  minDelayMs?: number;
  /** The largest delay, in ms. Default 20000. */
  maxDelayMs?: number;
  /** Each failed attempt multiplies the delay by this. Default 2. */
  factor?: number;
  /**
   * 0 to 1: the share of the delay that is random. Default 0.5. Without it,
   * every client cut by one server restart would come back in the same
   * millisecond, again and again.
   */
  jitter?: number;
}

export const DEFAULT_BACKOFF: Required<BackoffOptions> = {
  minDelayMs: 500,
  maxDelayMs: 20000,
  factor: 2,
  jitter: 0.5,
};

/**
 * The delay before reconnect attempt `attempt` (0 for the first after a
 * working connection): `min(max, min·factorⁿ)·(1 − jitter·random)`.
 * `random` is a parameter so that tests can pin it.
 */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions = {},
  random: () => number = Math.random,
): number {
  const o = { ...DEFAULT_BACKOFF, ...options };
  const jitter = Math.min(1, Math.max(0, o.jitter));
  const base = Math.min(o.maxDelayMs, o.minDelayMs * Math.pow(o.factor, Math.max(0, attempt)));
  return Math.round(base * (1 - jitter * random()));
}
