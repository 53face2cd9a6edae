// End to end: the real engine (IM on), the demo server, and headless
// Chromium with two users, alice and bob, each in its own browser context,
// chatting through the demo's UI. Every step is asserted on the DOM, so the
// whole path is covered: UI -> SDK -> WebSocket -> engine -> the other
// browser.
//
//   RINGCAST_BIN=/path/to/ringcast CHROMIUM=/usr/bin/chromium node --test test/web-chat.test.mjs
//
// RINGCAST_BIN defaults to target/release/ringcast of the repository,
// CHROMIUM to /usr/bin/chromium. The final screenshots are written to
// examples/web-chat/artifacts/.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import puppeteer from "puppeteer-core";
import { freePort, start, stop } from "./harness.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const demoDir = resolve(here, "..");
const repo = resolve(demoDir, "../..");
const artifacts = join(demoDir, "artifacts");
const ringcastBin = resolve(repo, process.env.RINGCAST_BIN || "target/release/ringcast");
const chromiumBin = process.env.CHROMIUM || "/usr/bin/chromium";

// One step of the UI: long enough for a loaded 2-core CI machine, short
// enough that a broken step fails the run in seconds, not minutes.
const STEP_MS = 15000;

let engine;
let demo;
let browser;
let dataDir;
let baseUrl;
const pageErrors = [];

before(async () => {
  assert.ok(existsSync(ringcastBin), `engine binary ${ringcastBin} is missing (set RINGCAST_BIN)`);
  assert.ok(
    existsSync(join(repo, "sdk/typescript/dist/index.js")),
    "sdk/typescript/dist/index.js is missing: run `npm ci && npm run build` in sdk/typescript",
  );
  mkdirSync(artifacts, { recursive: true });
  dataDir = mkdtempSync(join(tmpdir(), "ringcast-web-chat-"));
  const wsPort = await freePort();
  const apiPort = await freePort();
  // The quick-start config with IM on; only addresses, data and threads
  // move so that the test runs beside anything else. The offline grace is
  // shortened so that "bob went offline" shows in about a second, not 5.
  ({ proc: engine } = await start(
    "engine",
    ringcastBin,
    [
      `--config=${join(repo, "ringcast.toml")}`,
      "--im-enabled=true",
      `--websocket-listen=127.0.0.1:${wsPort}`,
      `--api-listen=127.0.0.1:${apiPort}`,
      `--server-data-dir=${join(dataDir, "data")}`,
      "--server-pin-cores=false",
      "--server-shards=1",
      "--im-presence-offline-grace-ms=1000",
    ],
    { cwd: repo, ready: /ringcast is ready/, timeoutMs: 30000, logFile: join(artifacts, "engine.log") },
  ));
  const started = await start("demo server", process.execPath, [join(demoDir, "server.mjs")], {
    cwd: repo,
    env: { PORT: "0", HOST: "127.0.0.1", RINGCAST_WS_URL: `ws://127.0.0.1:${wsPort}/connection/websocket` },
    ready: /listening on (http:\/\/127\.0\.0\.1:\d+\/)/,
    timeoutMs: 10000,
    logFile: join(artifacts, "demo-server.log"),
  });
  demo = started.proc;
  baseUrl = started.match[1];
  browser = await puppeteer.launch({
    executablePath: chromiumBin,
    headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
    protocolTimeout: 30000,
  });
});

after(async () => {
  const chromium = browser?.process();
  try {
    await Promise.race([browser?.close(), new Promise((r) => setTimeout(r, 5000))]);
  } finally {
    // close() normally ends it; by PID if it hung.
    if (chromium && chromium.exitCode === null) {
      try {
        process.kill(chromium.pid, "SIGKILL");
      } catch {
        // Gone meanwhile.
      }
    }
    await stop(demo);
    await stop(engine);
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  }
});

async function newUserPage(context, label) {
  const page = await context.newPage();
  await page.setViewport({ width: 1100, height: 720 });
  page.on("pageerror", (err) => pageErrors.push(`${label}: ${err.message}`));
  page.on("response", (res) => {
    if (res.status() >= 400) pageErrors.push(`${label}: HTTP ${res.status()} for ${res.url()}`);
  });
  page.on("console", (msg) => {
    if (msg.type() === "error") pageErrors.push(`${label} console: ${msg.text()}`);
  });
  return page;
}

// Waits until `fn(...args)` is truthy in the page; on timeout the error
// names the step and shows what the page showed.
async function waitUntil(page, what, fn, ...args) {
  try {
    await page.waitForFunction(fn, { timeout: STEP_MS, polling: 50 }, ...args);
  } catch (err) {
    const shown = await page
      .evaluate(() => document.querySelector("#app")?.innerText ?? document.body.innerText)
      .catch(() => "(page unavailable)");
    throw new Error(`${what}: ${err.message}\n--- page text ---\n${shown}`);
  }
}

async function login(page, user) {
  await page.goto(baseUrl, { waitUntil: "load" });
  await page.type("#login-user", user);
  await page.click("#login-form button[type=submit]");
  await waitUntil(page, `${user} connected`, () => document.querySelector("#conn-state")?.dataset.state === "connected");
  assert.equal(await text(page, "#me"), user);
}

function text(page, selector) {
  return page.$eval(selector, (e) => e.textContent.trim());
}

// Texts of the messages of the open conversation, in DOM (offset) order.
function messageTexts(page) {
  return page.$$eval("#messages li[data-testid=message] .text", (els) => els.map((e) => e.textContent));
}

async function sendText(page, message) {
  await page.type("#composer-input", message);
  await page.keyboard.press("Enter");
  await waitUntil(
    page,
    `"${message}" shown to its sender`,
    (m) => [...document.querySelectorAll("#messages li.mine .text")].some((e) => e.textContent === m),
    message,
  );
  await waitUntil(page, "composer cleared after send", () => document.querySelector("#composer-input").value === "");
}

function convSelector(attr, value) {
  return `#conv-list li[data-${attr}="${value}"]`;
}

async function badge(page, selector) {
  return page.$eval(selector, (li) => li.querySelector("[data-testid=unread-badge]")?.textContent ?? "");
}

async function waitBadge(page, who, selector, want) {
  await waitUntil(
    page,
    `${who}: unread badge of ${selector} is "${want}"`,
    (sel, w) => {
      const li = document.querySelector(sel);
      return li && (li.querySelector("[data-testid=unread-badge]")?.textContent ?? "") === w;
    },
    selector,
    want,
  );
}

// Status of the sender's own message with this text: sent, delivered, read.
async function waitStatus(page, who, message, want) {
  await waitUntil(
    page,
    `${who}: status of "${message}" is ${want}`,
    (m, w) =>
      [...document.querySelectorAll("#messages li.mine")].some(
        (li) => li.querySelector(".text").textContent === m && li.querySelector("[data-testid=msg-status]")?.dataset.status === w,
      ),
    message,
    want,
  );
}

async function waitPresence(page, who, peer, online) {
  await waitUntil(
    page,
    `${who} sees ${peer} ${online ? "online" : "offline"}`,
    (sel, on) => document.querySelector(sel)?.querySelector("[data-testid=conv-presence]")?.dataset.online === String(on),
    convSelector("peer", peer),
    online,
  );
}

test("alice and bob chat through the demo UI, and bob catches up after being away", { timeout: 240000 }, async () => {
  const aliceCtx = await browser.createBrowserContext();
  const bobCtx = await browser.createBrowserContext();
  const alice = await newUserPage(aliceCtx, "alice");
  let bob = await newUserPage(bobCtx, "bob");
  await login(alice, "alice");
  await login(bob, "bob");

  // --- a DM: alice starts it, bob sees it arrive unread.
  await alice.type("#new-dm-user", "bob");
  await alice.click("#new-dm button[type=submit]");
  await waitUntil(alice, "DM draft with bob open", () => document.querySelector("#thread-title")?.textContent === "bob");
  // presence_watch answers at once: bob is logged in, so online.
  await waitUntil(alice, "bob shown online in the thread header", () => document.querySelector("#thread-presence")?.dataset.online === "true");
  assert.equal(await text(alice, "#thread-presence"), "online");

  await sendText(alice, "Hello Bob!");
  await waitBadge(bob, "bob", convSelector("peer", "alice"), "1");
  assert.equal(await text(bob, "#total-unread"), "1");
  // The preview may come from the push or, when the list was read first,
  // from a history read of its own.
  await waitUntil(
    bob,
    "bob's list previews alice's message",
    (sel) => document.querySelector(sel)?.textContent === "alice: Hello Bob!",
    `${convSelector("peer", "alice")} .conv-preview`,
  );
  // Bob's SDK acked the push: alice is told it was delivered, not yet read.
  await waitStatus(alice, "alice", "Hello Bob!", "delivered");
  await waitPresence(bob, "bob", "alice", true);
  await waitPresence(alice, "alice", "bob", true);

  // --- bob reads: the badge goes, alice gets the read receipt.
  await bob.click(convSelector("peer", "alice"));
  await waitUntil(bob, "bob sees alice's message", () =>
    [...document.querySelectorAll("#messages li.theirs .text")].some((e) => e.textContent === "Hello Bob!"),
  );
  await waitBadge(bob, "bob", convSelector("peer", "alice"), "");
  await waitUntil(bob, "bob's total unread is 0", () => document.querySelector("#total-unread").textContent === "0");
  await waitStatus(alice, "alice", "Hello Bob!", "read");
  assert.equal(await text(alice, "#messages li.mine [data-testid=msg-status]"), "Read");

  // --- typing: bob types, alice sees the indicator; the message clears it.
  assert.equal(await text(alice, "#typing"), "");
  await bob.type("#composer-input", "Hi al");
  await waitUntil(alice, "alice sees bob typing", () => document.querySelector("#typing").textContent === "bob is typing…");
  await bob.type("#composer-input", "ice!");
  await bob.keyboard.press("Enter");
  await waitUntil(alice, "alice sees bob's reply", () =>
    [...document.querySelectorAll("#messages li.theirs .text")].some((e) => e.textContent === "Hi alice!"),
  );
  await waitUntil(alice, "typing indicator cleared", () => document.querySelector("#typing").textContent === "");
  // Alice has the conversation open: it is read at once, bob sees it.
  await waitStatus(bob, "bob", "Hi alice!", "read");
  await waitBadge(alice, "alice", convSelector("peer", "bob"), "");

  // --- a group: alice creates it with bob as a member.
  await alice.type("#group-name", "team");
  await alice.type("#group-members", "bob");
  await alice.click("#new-group button[type=submit]");
  await waitUntil(alice, "group open for alice", () => document.querySelector("#thread-title")?.textContent === "team");
  await waitUntil(alice, "create entry shown", () =>
    [...document.querySelectorAll("#messages li.system")].some((e) => e.textContent === 'alice created the group "team" with bob'),
  );
  const groupSel = '#conv-list li[data-kind="group"]';
  await waitUntil(bob, "group listed for bob", (sel) => document.querySelector(sel)?.querySelector(".conv-title")?.textContent === "team", groupSel);
  await sendText(alice, "Hello team");
  await waitBadge(bob, "bob", groupSel, "1");
  await bob.click(groupSel);
  await waitUntil(bob, "bob sees the group message", () =>
    [...document.querySelectorAll("#messages li.theirs .text")].some((e) => e.textContent === "Hello team"),
  );
  await waitUntil(bob, "group header counts both online", () => document.querySelector("#thread-presence").textContent === "2 of 2 online");
  await waitStatus(alice, "alice", "Hello team", "read");
  assert.equal(await text(alice, "#messages li.mine [data-testid=msg-status]"), "Read by bob");

  // --- a message in a conversation alice has but is not looking at: its
  // badge and her total count it, and opening it reads it.
  await bob.click(convSelector("peer", "alice"));
  await waitUntil(bob, "DM with alice open again", () => document.querySelector("#thread-title")?.textContent === "alice");
  await sendText(bob, "See you later");
  await waitBadge(alice, "alice", convSelector("peer", "bob"), "1");
  assert.equal(await text(alice, "#total-unread"), "1");
  assert.equal(await text(alice, "#thread-title"), "team", "alice still looks at the group");

  // --- bob goes away (his only page closes); alice sees him offline and
  // writes to him meanwhile.
  await bob.close();
  await alice.click(convSelector("peer", "bob"));
  await waitUntil(alice, "DM with bob open again", () => document.querySelector("#thread-title")?.textContent === "bob");
  await waitBadge(alice, "alice", convSelector("peer", "bob"), "");
  await waitUntil(alice, "alice's total unread is 0", () => document.querySelector("#total-unread").textContent === "0");
  await waitPresence(alice, "alice", "bob", false);
  await waitUntil(alice, "thread header says offline", () => /^offline/.test(document.querySelector("#thread-presence").textContent));
  const away = ["While you were away 1", "While you were away 2", "While you were away 3"];
  for (const m of away) await sendText(alice, m);
  for (const m of away) await waitStatus(alice, "alice", m, "sent");

  // --- bob comes back in a new page and logs in again: the sync at
  // connect lists the DM with 3 unread, history shows what he missed, in
  // order.
  bob = await newUserPage(bobCtx, "bob (back)");
  await login(bob, "bob");
  await waitBadge(bob, "bob", convSelector("peer", "alice"), "3");
  await waitUntil(bob, "bob's total unread is 3", () => document.querySelector("#total-unread").textContent === "3");
  assert.equal(await badge(bob, groupSel), "", "the group was read before bob left");
  await waitPresence(alice, "alice", "bob", true);
  await bob.click(convSelector("peer", "alice"));
  // The thread may first show the list preview's newest entries; it must
  // end as the whole conversation, in order.
  const whole = ["Hello Bob!", "Hi alice!", "See you later", ...away];
  await waitUntil(
    bob,
    "bob sees the whole conversation in order",
    (want) => JSON.stringify([...document.querySelectorAll("#messages li[data-testid=message] .text")].map((e) => e.textContent)) === want,
    JSON.stringify(whole),
  );
  assert.deepEqual(await messageTexts(bob), whole);
  await waitBadge(bob, "bob", convSelector("peer", "alice"), "");
  await waitUntil(bob, "bob's total unread is 0 again", () => document.querySelector("#total-unread").textContent === "0");
  for (const m of away) await waitStatus(alice, "alice", m, "read");
  assert.deepEqual(await messageTexts(alice), whole);

  const shot = join(artifacts, "final.png");
  const aliceShot = join(artifacts, "final-alice.png");
  await bob.screenshot({ path: shot });
  await alice.screenshot({ path: aliceShot });
  console.log(`screenshot: ${shot}`);
  console.log(`screenshot: ${aliceShot}`);

  assert.deepEqual(pageErrors, [], "the pages logged no errors");
  await aliceCtx.close();
  await bobCtx.close();
});
