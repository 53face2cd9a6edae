// The demo backend refuses settings that would make it unsafe: a token
// lifetime over a day, and a listening address other machines can reach
// (it mints a token for any user name) unless DEMO_INSECURE=1 says so.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const server = resolve(dirname(fileURLToPath(import.meta.url)), "../server.mjs");

/** Runs server.mjs with `env`; resolves to its exit code and stderr, or kills it once it serves. */
function run(env) {
  return new Promise((res) => {
    const proc = spawn(process.execPath, [server], { env: { ...process.env, PORT: "0", ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let err = "";
    let served = false;
    proc.stderr.on("data", (d) => (err += d));
    proc.stdout.on("data", (d) => {
      if (!String(d).includes("listening")) return;
      served = true;
      proc.kill("SIGTERM");
    });
    const killer = setTimeout(() => proc.kill("SIGKILL"), 5000);
    proc.on("exit", (code, signal) => {
      clearTimeout(killer);
      res({ code, served, err });
    });
  });
}

test("a token lifetime over a day is refused", async () => {
  const r = await run({ HOST: "127.0.0.1", DEMO_TOKEN_TTL_S: String(30 * 86400) });
  assert.equal(r.code, 2);
  assert.match(r.err, /DEMO_TOKEN_TTL_S must be an integer from 60 to 86400/);
});

test("a non-loopback HOST is refused without DEMO_INSECURE=1, and warned about with it", async () => {
  const refused = await run({ HOST: "0.0.0.0" });
  assert.equal(refused.code, 2);
  assert.equal(refused.served, false);
  assert.match(refused.err, /not a loopback address/);
  const allowed = await run({ HOST: "0.0.0.0", DEMO_INSECURE: "1" });
  assert.equal(allowed.served, true, `it should have served: ${allowed.err}`);
  assert.match(allowed.err, /WARNING: listening on 0\.0\.0\.0/);
});

test("loopback with the default lifetime serves", async () => {
  const r = await run({ HOST: "127.0.0.1" });
  assert.equal(r.served, true, r.err);
});
