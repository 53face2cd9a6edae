// Demo backend for the web chat: serves the single-page app and the SDK's
// ESM build, and mints client JWTs. It is the only part that holds the JWT
// secret; a real backend would mint a token only after checking the user's
// own session (password, SSO, ...). This one trusts the name it is given,
// which is what makes it a demo: never expose it beyond your machine.
//
//     node examples/web-chat/server.mjs
//
// Environment (all optional):
//   RINGCAST_AUTH_JWT_SECRET  HS256 secret, the engine's auth.jwt_secret
//                             (default: the quick-start ringcast.toml's)
//   RINGCAST_WS_URL           WebSocket URL handed to the browser
//                             (default ws://127.0.0.1:8080/connection/websocket)
//   HOST, PORT                where to listen (default 127.0.0.1:3000; PORT=0
//                             picks a free port, printed at start)
//   DEMO_TOKEN_TTL_S          token lifetime in seconds (default 3600, 60 to 86400)
//   DEMO_INSECURE=1           allow a HOST that is not loopback (anyone who
//                             can reach it gets a token for any user name)

import { createServer } from "node:http";
import { createHmac } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import { dirname, extname, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const publicDir = join(here, "public");
const sdkDir = resolve(here, "../../sdk/typescript/dist");

const DEV_SECRET = "dev-only-jwt-secret-change-me-0123456789";
const secret = process.env.RINGCAST_AUTH_JWT_SECRET || DEV_SECRET;
const wsUrl = process.env.RINGCAST_WS_URL || "ws://127.0.0.1:8080/connection/websocket";
const host = process.env.HOST || "127.0.0.1";
const port = Number(process.env.PORT ?? 3000);
const ttlS = Number(process.env.DEMO_TOKEN_TTL_S || 3600);

// The engine refuses secrets under 32 bytes; failing here says why at once
// instead of every login ending in an HTTP 401 from the engine.
if (Buffer.byteLength(secret) < 32) {
  console.error("RINGCAST_AUTH_JWT_SECRET must be at least 32 bytes");
  process.exit(2);
}
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`PORT must be 0..65535, got ${process.env.PORT}`);
  process.exit(2);
}
// Capped at a day: a demo token is a bearer credential for any user name,
// and the SDK refreshes it anyway.
const TTL_MAX_S = 86400;
if (!Number.isInteger(ttlS) || ttlS < 60 || ttlS > TTL_MAX_S) {
  console.error(`DEMO_TOKEN_TTL_S must be an integer from 60 to ${TTL_MAX_S}, got ${process.env.DEMO_TOKEN_TTL_S}`);
  process.exit(2);
}
// /token mints a token for whatever name it is given, with no login: on an
// address other machines can reach, that is anyone's account.
const loopback = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/i.test(host);
if (!loopback) {
  if (process.env.DEMO_INSECURE !== "1") {
    console.error(
      `HOST=${host} is not a loopback address: anyone who can reach it could get a token for any user. ` +
        "Set DEMO_INSECURE=1 to do it anyway (a trusted network only).",
    );
    process.exit(2);
  }
  console.warn(`WARNING: listening on ${host} with unauthenticated token minting (DEMO_INSECURE=1)`);
}

// Demo user names: short and plain, so that they read well in the UI and
// are valid Ringcast user ids.
const USER_RE = /^[a-z0-9][a-z0-9_.-]{0,31}$/;

function b64url(buf) {
  return Buffer.from(buf).toString("base64url");
}

function signJwt(claims, key) {
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac("sha256", key).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".svg": "image/svg+xml",
  ".ts": "text/plain; charset=utf-8",
};

function send(res, status, type, body) {
  res.writeHead(status, {
    "content-type": type,
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
  });
  res.end(body);
}

function sendJson(res, status, value) {
  send(res, status, "application/json; charset=utf-8", JSON.stringify(value));
}

// Serves root/rel, refusing anything that resolves outside root ("..",
// encoded slashes), so the SDK mount cannot be used to read the repository.
async function serveFile(res, root, rel) {
  const file = resolve(root, "." + sep + rel);
  if (file !== root && !file.startsWith(root + sep)) {
    return sendJson(res, 403, { error: "forbidden" });
  }
  try {
    const st = await stat(file);
    if (!st.isFile()) return sendJson(res, 404, { error: "not found" });
    const body = await readFile(file);
    send(res, 200, TYPES[extname(file)] || "application/octet-stream", body);
  } catch (err) {
    if (err.code === "ENOENT" || err.code === "ENOTDIR") {
      if (root === sdkDir) {
        return sendJson(res, 404, {
          error: "SDK build missing: run `npm ci && npm run build` in sdk/typescript",
        });
      }
      return sendJson(res, 404, { error: "not found" });
    }
    throw err;
  }
}

async function readBody(req, limit = 4096) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw Object.assign(new Error("body too large"), { status: 413 });
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

async function login(req, res) {
  let body;
  try {
    body = JSON.parse(await readBody(req));
  } catch (err) {
    return sendJson(res, err.status || 400, { error: err.status ? err.message : "body must be JSON" });
  }
  const user = typeof body?.user === "string" ? body.user.trim().toLowerCase() : "";
  if (!USER_RE.test(user)) {
    return sendJson(res, 400, {
      error: "user must be 1 to 32 characters: a-z, 0-9, '_', '.', '-', starting with a letter or digit",
    });
  }
  const now = Math.floor(Date.now() / 1000);
  const exp = now + ttlS;
  const token = signJwt({ sub: user, iat: now, exp }, secret);
  sendJson(res, 200, { user, token, url: wsUrl, expiresAtMs: exp * 1000 });
}

const server = createServer(async (req, res) => {
  try {
    const url = new URL(req.url, "http://localhost");
    let path;
    try {
      path = decodeURIComponent(url.pathname);
    } catch {
      return sendJson(res, 400, { error: "bad path encoding" });
    }
    if (path === "/api/login") {
      if (req.method !== "POST") return sendJson(res, 405, { error: "use POST" });
      return await login(req, res);
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      return sendJson(res, 405, { error: "method not allowed" });
    }
    if (path.startsWith("/sdk/")) return await serveFile(res, sdkDir, path.slice("/sdk/".length));
    return await serveFile(res, publicDir, path === "/" ? "index.html" : path.slice(1));
  } catch (err) {
    console.error(`${req.method} ${req.url}: ${err.stack || err}`);
    if (!res.headersSent) sendJson(res, 500, { error: "internal error" });
    else res.destroy();
  }
});

server.listen(port, host, () => {
  const addr = server.address();
  // Tests and scripts read this line to learn the port when PORT=0.
  console.log(`web-chat demo listening on http://${addr.address}:${addr.port}/ (engine ${wsUrl})`);
  if (secret === DEV_SECRET) console.log("using the quick-start's DEV ONLY JWT secret");
});

for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
