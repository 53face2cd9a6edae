// Starts the real `ringcast` binary for the integration tests: a config in
// a temp dir, free loopback ports, the quick-start JWT secret.
import { spawn, type ChildProcess } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const SECRET = "dev-only-jwt-secret-change-me-0123456789";
const API_KEY = "sdk-test-api-key-0123456789";

/** Repo root: sdk/typescript/build-test/test -> ../../../.. */
const REPO = resolve(fileURLToPath(new URL(".", import.meta.url)), "../../../..");
export const BIN = resolve(REPO, process.env.RINGCAST_BIN ?? "target/release/ringcast");

function b64url(s: string | Buffer): string {
  return Buffer.from(s).toString("base64url");
}

/** An HS256 connection token for `user`, expiring `ttlS` seconds from now. */
export function mintToken(user: string, ttlS = 3600, claims: Record<string, unknown> = {}): string {
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify({ sub: user, exp: Math.floor(Date.now() / 1000) + ttlS, ...claims }));
  const sig = createHmac("sha256", SECRET).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.on("error", rej);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => res(port));
    });
  });
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resolves when `cond()` holds, polling; rejects after `timeoutMs` with `what`. */
export async function waitFor(cond: () => boolean, what: string, timeoutMs = 8000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

function config(dataDir: string, wsPort: number, apiPort: number): string {
  return `
version = 1
[server]
shards = 2
pin_cores = false
data_dir = "${dataDir}"
shutdown_grace_ms = 300
[websocket]
listen = "127.0.0.1:${wsPort}"
path = "/connection/websocket"
[api]
listen = "127.0.0.1:${apiPort}"
key = "${API_KEY}"
[auth]
jwt_secret = "${SECRET}"
algorithm = "HS256"
leeway_s = 0
[im]
enabled = true
[[namespace]]
name = "chat"
subscribe = "public"
publish = "subscribers"
history = true
durability = "buffered"
retention_count = 1000
retention_age_s = 86400
[[namespace]]
name = "room"
subscribe = "public"
publish = "any"
[log]
level = "warn"
`;
}

/** One engine process; `restart` keeps its ports, and its data unless asked. */
export class Engine {
  readonly dir = mkdtempSync(join(tmpdir(), "ringcast-sdk-"));
  private proc: ChildProcess | undefined;
  private generation = 0;
  wsPort = 0;
  apiPort = 0;

  get wsUrl(): string {
    return `ws://127.0.0.1:${this.wsPort}/connection/websocket`;
  }

  async start(): Promise<void> {
    if (!this.wsPort) {
      this.wsPort = await freePort();
      this.apiPort = await freePort();
    }
    const cfg = join(this.dir, "ringcast.toml");
    writeFileSync(cfg, config(join(this.dir, `data${this.generation}`), this.wsPort, this.apiPort));
    const proc = spawn(BIN, [`--config=${cfg}`], { stdio: ["ignore", "ignore", "inherit"] });
    this.proc = proc;
    const exited = new Promise((_, rej) => proc.once("exit", (c) => rej(new Error(`ringcast exited with ${c}`))));
    exited.catch(() => undefined);
    const end = Date.now() + 10000;
    for (;;) {
      const ok = await Promise.race([
        fetch(`http://127.0.0.1:${this.apiPort}/health`).then((r) => r.ok, () => false),
        exited,
      ]);
      if (ok) return;
      if (Date.now() > end) throw new Error("ringcast did not start serving within 10 s");
      await sleep(50);
    }
  }

  /** SIGTERM (clients get 1001), or SIGKILL (no close frame: 1006). */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const gone = new Promise((r) => proc.once("exit", r));
    proc.kill(signal);
    const killer = setTimeout(() => proc.kill("SIGKILL"), 5000);
    await gone;
    clearTimeout(killer);
  }

  /** Stops and starts again on the same ports; `freshData` starts on an empty data dir. */
  async restart(freshData = false, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    await this.stop(signal);
    if (freshData) this.generation++;
    await this.start();
  }

  async api(path: string, body: unknown): Promise<any> {
    const r = await fetch(`http://127.0.0.1:${this.apiPort}${path}`, {
      method: "POST",
      headers: { Authorization: `apikey ${API_KEY}`, "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const text = await r.text();
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status} ${text}`);
    return JSON.parse(text);
  }

  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * A TCP relay in front of the engine's WebSocket port that the test can
 * cut: the client sees a connection fail without a close frame (1006), as
 * on a network drop, while the engine and the other clients stay up.
 */
export class CutProxy {
  private server: Server | undefined;
  private readonly open = new Set<Socket>();
  private held: [Socket, Buffer][] | undefined;
  /** While down, new connections are dropped at once. */
  down = false;
  port = 0;

  constructor(private readonly engine: Engine) {}

  get wsUrl(): string {
    return `ws://127.0.0.1:${this.port}/connection/websocket`;
  }

  async start(): Promise<void> {
    this.port = await freePort();
    const server = createServer((client) => {
      if (this.down) return void client.destroy();
      const upstream = connect(this.engine.wsPort, "127.0.0.1");
      for (const s of [client, upstream]) {
        this.open.add(s);
        s.on("error", () => undefined);
        s.on("close", () => {
          this.open.delete(s);
          client.destroy();
          upstream.destroy();
        });
      }
      client.on("data", (d: Buffer) => (this.held ? this.held.push([upstream, d]) : upstream.write(d)));
      upstream.pipe(client);
    });
    this.server = server;
    await new Promise<void>((res) => server.listen(this.port, "127.0.0.1", () => res()));
  }

  /**
   * Holds what clients send (the server's pushes still flow) until the
   * returned function is called: a command is then late at the server, as
   * on a slow uplink, and pushes made meanwhile cross it.
   */
  holdUpstream(): () => void {
    this.held = [];
    return () => {
      const held = this.held ?? [];
      this.held = undefined;
      for (const [to, d] of held) to.write(d);
    };
  }

  /** Drops every relayed connection and refuses new ones until `restore`. */
  cut(): void {
    this.down = true;
    for (const s of this.open) s.destroy();
  }

  restore(): void {
    this.down = false;
  }

  async stop(): Promise<void> {
    this.cut();
    await new Promise((res) => this.server?.close(res));
  }
}
