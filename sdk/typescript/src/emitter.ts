/**
 * A minimal typed event emitter. The SDK must run in browsers and Node with
 * no dependencies, so neither Node's EventEmitter nor EventTarget (whose
 * events would need wrapping) is used.
 */
export class Emitter<Events extends { [K in keyof Events]: (arg: any) => void }> {
  private listeners = new Map<keyof Events, Set<Events[keyof Events]>>();

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof Events>(event: K, listener: Events[K]): () => void {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(listener);
    return () => this.off(event, listener);
  }

  /** Like `on`, for the next event only. */
  once<K extends keyof Events>(event: K, listener: Events[K]): () => void {
    const off = this.on(event, ((arg: Parameters<Events[K]>[0]) => {
      off();
      listener(arg);
    }) as Events[K]);
    return off;
  }

  off<K extends keyof Events>(event: K, listener: Events[K]): void {
    this.listeners.get(event)?.delete(listener);
  }

  protected listenerCount<K extends keyof Events>(event: K): number {
    return this.listeners.get(event)?.size ?? 0;
  }

  /**
   * Calls every listener. A listener that throws must not break the SDK's
   * own bookkeeping (or the other listeners), so the exception is rethrown
   * on a fresh task, where it reaches the host's unhandled-error reporting.
   * Returns false when a listener threw, so that the SDK does not ack a
   * publication the app failed on.
   */
  protected emit<K extends keyof Events>(event: K, arg: Parameters<Events[K]>[0]): boolean {
    const set = this.listeners.get(event);
    if (!set) return true;
    let ok = true;
    for (const listener of [...set]) {
      try {
        (listener as (a: unknown) => void)(arg);
      } catch (err) {
        ok = false;
        setTimeout(() => {
          throw err;
        }, 0);
      }
    }
    return ok;
  }
}
