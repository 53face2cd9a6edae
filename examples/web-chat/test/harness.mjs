// Processes for the browser test: the real engine and the demo server on
// free loopback ports, each stopped by its PID, with their output kept for
// the failure message.

import { spawn } from "node:child_process";
import { createWriteStream, existsSync } from "node:fs";
import net from "node:net";

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Starts `cmd` and resolves once a line of its output matches `ready`
 * (resolving to the match), or rejects when it exits or `timeoutMs` passes.
 * Output goes to `logFile` and the last 16 KiB are kept in `proc.tail`.
 */
export function start(name, cmd, args, { env, cwd, ready, timeoutMs, logFile }) {
  if (!existsSync(cmd) && cmd.includes("/")) {
    return Promise.reject(new Error(`${name}: ${cmd} does not exist`));
  }
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, cwd, stdio: ["ignore", "pipe", "pipe"] });
  const proc = { name, child, tail: "", exited: null };
  const log = logFile ? createWriteStream(logFile) : null;
  proc.exitedPromise = new Promise((resolve) => {
    child.on("exit", (code, signal) => {
      proc.exited = { code, signal };
      resolve(proc.exited);
    });
  });
  return new Promise((resolve, reject) => {
    let done = false;
    const timer = setTimeout(() => finish(new Error(`${name} not ready within ${timeoutMs} ms`)), timeoutMs);
    function finish(err, match) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) {
        stop(proc).finally(() => reject(new Error(`${err.message}\n--- ${name} output ---\n${proc.tail}`)));
      } else resolve({ proc, match });
    }
    const onData = (chunk) => {
      const text = chunk.toString();
      log?.write(chunk);
      proc.tail = (proc.tail + text).slice(-16384);
      // Colour codes of the engine's text log would split the match.
      const m = proc.tail.replace(/\x1b\[[0-9;]*m/g, "").match(ready);
      if (m) finish(null, m);
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("error", (err) => finish(err));
    proc.exitedPromise.then(({ code, signal }) => finish(new Error(`${name} exited (code ${code}, signal ${signal})`)));
    proc.log = log;
  });
}

/** SIGTERM by PID, then SIGKILL after `graceMs` if it is still there. */
export async function stop(proc, graceMs = 5000) {
  if (!proc || proc.exited) {
    proc?.log?.end();
    return;
  }
  try {
    process.kill(proc.child.pid, "SIGTERM");
  } catch {
    // Already gone between the check and the kill.
  }
  const killer = setTimeout(() => {
    try {
      process.kill(proc.child.pid, "SIGKILL");
    } catch {
      // Exited during the grace.
    }
  }, graceMs);
  await proc.exitedPromise;
  clearTimeout(killer);
  proc.log?.end();
}
