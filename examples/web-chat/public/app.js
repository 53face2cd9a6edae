// The web chat's whole client: one Client per login, the conversation list
// from the IM sync and conv_list, messages from pushes and history, and the
// IM events (read, receipt, delivered, typing, presence) drawn into the DOM.
// The DOM is rebuilt from `state` on every change: small enough for a demo,
// and it keeps what is shown a function of what the server said.

import { Client } from "@ringcast/client";

const $ = (id) => document.getElementById(id);

// Matches the protocol's advice: send `typing` about every 3 s while the
// user types, `stopped` when they stop; drop an indicator not heard of for
// about 5 s (a lost `stopped`, a peer that closed its tab).
const TYPING_RESEND_MS = 3000;
const TYPING_IDLE_MS = 4000;
const TYPING_SHOW_MS = 5000;
const HISTORY_PAGE = 50;

const state = {
  me: "",
  client: null,
  convs: new Map(), // conv name -> Conv
  open: null, // conv name, or {draftPeer} before a new DM's first message
  presence: new Map(), // user -> {online, last_seen_ms}
  watched: new Set(),
};

/**
 * @typedef {{conv: string, peer: string, group: null | {name: string, member_count?: number, left?: boolean, dissolved?: boolean},
 *   lastOffset: number, lastTime: number, unread: number, readOffset: number, preview: string,
 *   entries: Map<number, object>, loaded: boolean, loading: Promise<void> | null,
 *   receipts: Map<string, {read: number, delivered: number}>, typing: Map<string, number>, members: string[]}} Conv
 */

function newConv(name) {
  return {
    conv: name,
    peer: "",
    group: null,
    lastOffset: 0,
    lastTime: 0,
    unread: 0,
    readOffset: 0,
    preview: "",
    entries: new Map(),
    loaded: false,
    loading: null,
    receipts: new Map(),
    typing: new Map(),
    members: [],
  };
}

function conv(name) {
  let c = state.convs.get(name);
  if (!c) {
    c = newConv(name);
    state.convs.set(name, c);
  }
  return c;
}

function isConvChannel(channel) {
  return channel.startsWith("dm:") || channel.startsWith("grp:");
}

function openConvName() {
  return typeof state.open === "string" ? state.open : null;
}

function showError(err) {
  const el = $("app-error");
  el.textContent = err && err.code !== undefined ? `Error ${err.code}: ${err.message}` : String(err?.message ?? err);
  el.hidden = false;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => (el.hidden = true), 6000);
}

// ---------------------------------------------------------------- login

function deviceId(user) {
  // One device per browser profile and user: the server keeps this device's
  // inbox cursor and conversation acks across reloads.
  const key = `ringcast-demo-device:${user}`;
  let id = localStorage.getItem(key);
  if (!id) {
    id = `web-${crypto.randomUUID()}`;
    localStorage.setItem(key, id);
  }
  return id;
}

async function fetchLogin(user) {
  const res = await fetch("/api/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error || `login failed: HTTP ${res.status}`);
  return body;
}

async function login(name) {
  const session = await fetchLogin(name);
  state.me = session.user;
  const client = new Client({
    url: session.url,
    token: session.token,
    // The demo backend mints a fresh token for the same name; a real one
    // would check the user's session cookie here.
    getToken: async () => (await fetchLogin(state.me)).token,
    device: deviceId(state.me),
  });
  state.client = client;
  client.on("connecting", () => setConnState("connecting"));
  client.on("connected", onConnected);
  client.on("disconnected", (ev) => {
    setConnState(ev.reconnect ? "connecting" : "disconnected");
    if (!ev.reconnect && ev.code !== 1000) showError({ code: ev.code, message: ev.reason || "connection closed" });
  });
  client.on("publication", onPublication);
  // The SDK replays conversations it had pushes of after a reconnect; one it
  // could not replay whole (another epoch, over the catch-up limit) is read
  // from its stream here.
  client.on("recovery", (ev) => {
    const c = state.convs.get(ev.channel);
    if (c?.loaded && isConvChannel(ev.channel)) fillGap(c);
  });
  client.on("im", onImEvent);
  client.on("error", showError);
  $("me").textContent = state.me;
  $("login").hidden = true;
  $("app").hidden = false;
  document.title = `${state.me} · Ringcast chat`;
  client.connect();
}

function logout() {
  stopTyping();
  state.client?.disconnect();
  state.client = null;
  state.convs.clear();
  state.presence.clear();
  state.watched.clear();
  state.open = null;
  $("app").hidden = true;
  $("login").hidden = false;
  render();
}

function setConnState(s) {
  const el = $("conn-state");
  el.dataset.state = s;
  el.textContent = s;
}

// ------------------------------------------------------------ connection

async function onConnected() {
  setConnState("connected");
  try {
    await refreshConvList();
    // Watches end with the connection: watch everyone again, which also
    // answers their state now.
    if (state.watched.size) await watch([...state.watched], true);
    // Whatever arrived while the socket was down: read each loaded
    // conversation's gap from its stored stream.
    for (const c of state.convs.values()) if (c.loaded) await fillGap(c);
    const open = openConvName();
    if (open) {
      await loadReceipts(state.convs.get(open));
      markRead(state.convs.get(open));
    }
  } catch (err) {
    showError(err);
  }
  render();
}

function applyConvInfo(info) {
  const c = conv(info.conv);
  c.peer = info.peer || "";
  c.group = info.group || null;
  c.lastTime = Math.max(c.lastTime, info.last_time_ms || 0);
  c.readOffset = Math.max(c.readOffset, info.read_offset);
  // The list is the server's count as of its snapshot; messages from others
  // pushed after it (offsets past its last_offset) are added on top, so a
  // push that raced the list is counted once.
  let later = 0;
  for (const [o, p] of c.entries) {
    if (o > info.last_offset && o > c.readOffset && isMessage(p) && p.sender !== state.me) later += 1;
  }
  c.unread = info.unread + later;
  c.lastOffset = Math.max(c.lastOffset, info.last_offset);
  return c;
}

async function refreshConvList() {
  const client = state.client;
  let cursor;
  const peers = [];
  const groups = [];
  // Page the whole list: a demo account has a few conversations, and the
  // list is what tells which are groups and who each DM's peer is.
  do {
    const page = await client.im.convList({ limit: 100, cursor });
    if (client !== state.client) return;
    for (const info of page.convs) {
      const c = applyConvInfo(info);
      if (c.peer && c.peer !== state.me) peers.push(c.peer);
      if (c.group && !c.group.left && !c.group.dissolved) groups.push(c);
    }
    cursor = page.next;
  } while (cursor);
  for (const c of state.convs.values()) if (!c.preview && !c.loaded && !c.previewing) loadPreview(c);
  for (const g of groups) {
    if (g.members.length) continue;
    const res = await client.im.groupMembers(g.conv, { limit: 100 });
    g.members = res.members.map((m) => m.user);
    for (const u of g.members) if (u !== state.me) peers.push(u);
  }
  await watch(peers);
  render();
}

// The list says where a conversation is, not what it says: read its last
// entries once so that the list shows a preview.
async function loadPreview(c) {
  c.previewing = true;
  try {
    const res = await state.client.history(c.conv, { reverse: true, limit: 5 });
    for (const p of res.publications) addEntry(c, p, { live: false });
    render();
  } catch (err) {
    if (err.code !== 123) showError(err);
  } finally {
    c.previewing = false;
  }
}

let listRefresh = null;
// A push of a conversation the list does not know yet (a DM someone just
// started, a group we were added to): fetch the list once for its peer or
// name, however many pushes arrive meanwhile.
function scheduleListRefresh() {
  if (listRefresh) return;
  listRefresh = setTimeout(async () => {
    listRefresh = null;
    try {
      await refreshConvList();
    } catch (err) {
      showError(err);
    }
  }, 50);
}

async function watch(users, again = false) {
  const todo = [...new Set(users)].filter((u) => u && u !== state.me && (again || !state.watched.has(u)));
  if (!todo.length) return;
  for (const u of todo) state.watched.add(u);
  const res = await state.client.im.presenceWatch(todo);
  for (const p of res.users) state.presence.set(p.user, { online: p.online, last_seen_ms: p.last_seen_ms });
  render();
}

// --------------------------------------------------------- conversations

function entryKind(p) {
  return p.data && typeof p.data === "object" ? p.data.kind : undefined;
}

function isMessage(p) {
  const k = entryKind(p);
  return k === "text" || k === "custom" || k === "attachment";
}

function messageText(p) {
  const d = p.data;
  if (d.state === "recalled") return "message recalled";
  if (d.kind === "text") return d.data?.text ?? "";
  if (d.kind === "attachment") return `[attachment] ${d.data?.name || d.data?.url || ""}`;
  return `[${d.kind}] ${JSON.stringify(d.data)}`;
}

function memberText(p) {
  const m = p.data.data || {};
  const who = m.actor || "the app";
  const targets = (m.targets || []).join(", ");
  switch (m.op) {
    case "create":
      return `${who} created the group "${m.name}"${targets ? ` with ${targets}` : ""}`;
    case "add":
      return `${who} added ${targets}`;
    case "remove":
      return `${who} removed ${targets}`;
    case "leave":
      return `${who} left`;
    case "update":
      return `${who} changed the group${m.name ? ` name to "${m.name}"` : ""}`;
    case "dissolve":
      return `${who} dissolved the group`;
    default:
      return `${who}: ${m.op} ${targets}`;
  }
}

// Adds a pushed or stored entry. Recall and edit entries change the message
// they point at (ref_id guards against anything else at that offset).
function addEntry(c, p, { live }) {
  if (typeof p.offset !== "number" || c.entries.has(p.offset)) return false;
  const kind = entryKind(p);
  if (kind === "recall" || kind === "edit") {
    const target = c.entries.get(p.data.data?.ref_offset);
    if (target && target.id === p.data.data?.ref_id) {
      target.data =
        kind === "recall"
          ? { kind: target.data.kind, state: "recalled" }
          : { kind: target.data.kind, data: p.data.data.data, state: "edited" };
    }
    c.entries.set(p.offset, { ...p, hidden: true });
    return true;
  }
  c.entries.set(p.offset, p);
  if (isMessage(p) || kind === "member") {
    if (p.offset >= c.lastOffset || !c.preview) {
      c.preview = isMessage(p) ? `${p.sender === state.me ? "You" : p.sender}: ${messageText(p)}` : memberText(p);
    }
    c.lastTime = Math.max(c.lastTime, p.time || 0);
  }
  const fresh = p.offset > c.lastOffset;
  if (fresh) c.lastOffset = p.offset;
  if (live && fresh && isMessage(p) && p.sender !== state.me && p.offset > c.readOffset) c.unread += 1;
  if (isMessage(p) && p.sender) clearTyping(c, p.sender);
  return true;
}

function onPublication(p) {
  if (!isConvChannel(p.channel)) return;
  const known = state.convs.has(p.channel) && (state.convs.get(p.channel).peer || state.convs.get(p.channel).group);
  const c = conv(p.channel);
  const prevMax = maxOffset(c);
  if (!addEntry(c, p, { live: true })) return;
  if (!known) scheduleListRefresh();
  if (entryKind(p) === "member") {
    // A change to the membership changes who to watch and the group's
    // header; re-read them rather than replaying the change locally.
    c.members = [];
    scheduleListRefresh();
  }
  // Offsets are gap-free: one past our last + 1 means pushes were missed
  // (a full lane); the stored stream has them.
  if (c.loaded && prevMax && p.offset > prevMax + 1) fillGap(c, prevMax);
  if (openConvName() === c.conv) markRead(c);
  render();
}

function maxOffset(c) {
  let m = 0;
  for (const o of c.entries.keys()) if (o > m) m = o;
  return m;
}

async function loadHistory(c) {
  if (c.loaded) return;
  if (!c.loading) {
    c.loading = (async () => {
      const res = await state.client.history(c.conv, { reverse: true, limit: HISTORY_PAGE });
      for (const p of res.publications) addEntry(c, p, { live: false });
      c.loaded = true;
    })().finally(() => (c.loading = null));
  }
  await c.loading;
}

async function fillGap(c, since = maxOffset(c)) {
  try {
    for (;;) {
      const res = await state.client.history(c.conv, { since, limit: 100 });
      for (const p of res.publications) addEntry(c, p, { live: false });
      if (res.publications.length < 100) break;
      since = res.publications[res.publications.length - 1].offset;
    }
    render();
  } catch (err) {
    showError(err);
  }
}

async function loadReceipts(c) {
  if (!c) return;
  const res = await state.client.im.receipts(c.conv, { limit: 100 });
  for (const r of res.receipts) c.receipts.set(r.user, { read: r.read, delivered: r.delivered });
  render();
}

// Reads up to the conversation's last entry while it is open and the page
// is visible; one `read` in flight per conversation, re-sent if more
// arrived meanwhile.
function markRead(c) {
  if (!c || !state.client || document.visibilityState !== "visible") return;
  if (c.lastOffset <= c.readOffset && c.unread === 0) return;
  if (c.reading) {
    c.readAgain = true;
    return;
  }
  c.reading = true;
  const upto = c.lastOffset;
  state.client.im
    .read(c.conv, upto)
    .then((res) => {
      c.readOffset = Math.max(c.readOffset, res.offset);
      c.unread = res.unread;
      render();
    })
    .catch(showError)
    .finally(() => {
      c.reading = false;
      if (c.readAgain || c.lastOffset > upto) {
        c.readAgain = false;
        markRead(c);
      }
    });
}

async function openConv(name) {
  state.open = name;
  const c = conv(name);
  stopTyping();
  render();
  try {
    await loadHistory(c);
    await loadReceipts(c);
    markRead(c);
  } catch (err) {
    showError(err);
  }
  render();
  $("composer-input").focus();
}

function openDm(peer) {
  peer = peer.trim().toLowerCase();
  if (!peer) return;
  const existing = [...state.convs.values()].find((c) => c.peer === peer && !c.group);
  if (existing) return openConv(existing.conv);
  // No conversation yet: it starts with the first message (msg_send `to`).
  stopTyping();
  state.open = { draftPeer: peer };
  watch([peer]).catch(showError);
  render();
  $("composer-input").focus();
}

async function createGroup(name, members) {
  const res = await state.client.im.groupCreate({
    name,
    members,
    clientMsgId: `grp-${crypto.randomUUID()}`,
  });
  await refreshConvList();
  await openConv(res.conv);
}

// The idempotency key of a send that failed, kept for its retry: after a
// dropped connection the first try may have been stored (only its reply was
// lost), and resending it with the same key stores it at most once.
let unsentKey = null;

async function sendMessage(text) {
  const client = state.client;
  const open = state.open;
  const target = typeof open === "string" ? open : `to:${open.draftPeer}`;
  const retry = unsentKey && unsentKey.target === target && unsentKey.text === text;
  const key = retry ? unsentKey.key : crypto.randomUUID();
  const params = { kind: "text", data: { text }, clientMsgId: key };
  if (typeof open === "string") params.conv = open;
  else params.to = open.draftPeer;
  stopTyping();
  let res;
  try {
    res = await client.im.send(params);
  } catch (err) {
    unsentKey = { target, text, key };
    throw err;
  }
  unsentKey = null;
  if (typeof open !== "string") {
    // The first message created the DM; the list gives it its peer.
    const c = conv(res.conv);
    c.peer = open.draftPeer;
    if (state.open === open) await openConv(res.conv);
    scheduleListRefresh();
  }
}

// ------------------------------------------------------------ IM events

function onImEvent(ev) {
  switch (ev.type) {
    case "sync": {
      // The sync at connect holds the changed (or newest) conversations;
      // the full list is fetched on `connected` too, this just shows the
      // unread counts without waiting for it.
      for (const info of ev.convs) applyConvInfo(info);
      break;
    }
    case "read": {
      // Another device of ours read: clear the badge here too.
      const c = conv(ev.conv);
      c.readOffset = Math.max(c.readOffset, ev.offset);
      c.unread = ev.unread;
      break;
    }
    case "receipt": {
      const r = conv(ev.conv).receipts;
      const prev = r.get(ev.user) || { read: 0, delivered: 0 };
      r.set(ev.user, { read: Math.max(prev.read, ev.read), delivered: Math.max(prev.delivered, ev.read) });
      break;
    }
    case "delivered": {
      const r = conv(ev.conv).receipts;
      const prev = r.get(ev.user) || { read: 0, delivered: 0 };
      r.set(ev.user, { read: prev.read, delivered: Math.max(prev.delivered, ev.offset) });
      break;
    }
    case "typing": {
      const c = conv(ev.conv);
      if (ev.state === "typing") {
        clearTimeout(c.typing.get(ev.user));
        c.typing.set(
          ev.user,
          setTimeout(() => {
            c.typing.delete(ev.user);
            render();
          }, TYPING_SHOW_MS),
        );
      } else clearTyping(c, ev.user);
      break;
    }
    case "presence":
      state.presence.set(ev.user, { online: ev.online, last_seen_ms: ev.last_seen_ms });
      break;
    default:
      return;
  }
  render();
}

function clearTyping(c, user) {
  clearTimeout(c.typing.get(user));
  c.typing.delete(user);
}

// Our own typing signals for the open conversation.
let typingSent = null; // {conv, at}
let typingIdle = null;

function onComposerInput() {
  const name = openConvName();
  if (!name || !$("composer-input").value) return stopTyping();
  const now = Date.now();
  if (!typingSent || typingSent.conv !== name || now - typingSent.at >= TYPING_RESEND_MS) {
    typingSent = { conv: name, at: now };
    state.client.im.typing(name, "typing").catch(showError);
  }
  clearTimeout(typingIdle);
  typingIdle = setTimeout(stopTyping, TYPING_IDLE_MS);
}

function stopTyping() {
  clearTimeout(typingIdle);
  if (!typingSent) return;
  const { conv: name } = typingSent;
  typingSent = null;
  state.client?.im.typing(name, "stopped").catch(showError);
}

// --------------------------------------------------------------- render

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "dataset") Object.assign(e.dataset, v);
    else if (k === "class") e.className = v;
    else e[k] = v;
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

function convTitle(c) {
  if (c.group) return c.group.name;
  if (c.peer) return c.peer === state.me ? `${c.peer} (you)` : c.peer;
  return c.conv;
}

function presenceText(user) {
  const p = state.presence.get(user);
  if (!p) return "";
  if (p.online) return "online";
  if (!p.last_seen_ms) return "offline";
  return `offline · last seen ${new Date(p.last_seen_ms).toLocaleTimeString()}`;
}

function typingUsers(c) {
  return [...c.typing.keys()].filter((u) => u !== state.me);
}

function render() {
  if (!state.client) return;
  // The sum of the badges rather than the server's total_unread: the whole
  // list is loaded, and pushes move the badges between two list reads.
  let total = 0;
  for (const c of state.convs.values()) total += c.unread;
  $("total-unread").textContent = String(total);
  renderList();
  renderThread();
}

function renderList() {
  const list = $("conv-list");
  const convs = [...state.convs.values()]
    .filter((c) => c.peer || c.group)
    .sort((a, b) => b.lastTime - a.lastTime || (a.conv < b.conv ? -1 : 1));
  const open = openConvName();
  list.replaceChildren(
    ...convs.map((c) => {
      const typing = typingUsers(c);
      const online = c.group ? undefined : state.presence.get(c.peer)?.online;
      return el(
        "li",
        {
          class: `conv${c.conv === open ? " active" : ""}`,
          dataset: { conv: c.conv, peer: c.peer, kind: c.group ? "group" : "dm", testid: "conv" },
          onclick: () => openConv(c.conv),
        },
        el("span", {
          class: c.group ? "dot group" : "dot",
          dataset: c.group ? {} : { online: String(!!online), testid: "conv-presence" },
          title: c.group ? "group" : presenceText(c.peer),
        }),
        el("span", { class: "conv-title", textContent: convTitle(c) }),
        c.unread > 0 ? el("span", { class: "badge", textContent: String(c.unread), dataset: { testid: "unread-badge" } }) : el("span"),
        typing.length
          ? el("span", { class: "conv-preview typing-hint", textContent: `${typing.join(", ")} typing…` })
          : el("span", { class: "conv-preview", textContent: c.preview }),
      );
    }),
  );
}

function messageStatus(c, p) {
  // Who has read or received this message of ours, from the receipts the
  // server pushed or answered.
  const others = [...c.receipts.entries()].filter(([u]) => u !== state.me);
  const readers = others.filter(([, r]) => r.read >= p.offset).map(([u]) => u);
  const receivers = others.filter(([, r]) => r.delivered >= p.offset).map(([u]) => u);
  if (!c.group) {
    if (readers.length) return ["read", "Read"];
    if (receivers.length) return ["delivered", "Delivered"];
    return ["sent", "Sent"];
  }
  if (readers.length) return ["read", `Read by ${readers.join(", ")}`];
  if (receivers.length) return ["delivered", `Delivered to ${receivers.join(", ")}`];
  return ["sent", "Sent"];
}

function renderThread() {
  const open = state.open;
  $("thread-empty").hidden = !!open;
  $("thread").hidden = !open;
  if (!open) return;
  const c = typeof open === "string" ? state.convs.get(open) : null;
  const title = c ? convTitle(c) : open.draftPeer;
  $("thread-title").textContent = title;
  const pres = $("thread-presence");
  if (c?.group) {
    const members = c.members.length ? c.members : [];
    const online = members.filter((u) => u === state.me || state.presence.get(u)?.online).length;
    pres.textContent = members.length ? `${online} of ${members.length} online` : "";
    delete pres.dataset.online;
  } else {
    const peer = c ? c.peer : open.draftPeer;
    pres.textContent = peer === state.me ? "" : presenceText(peer);
    pres.dataset.online = String(!!state.presence.get(peer)?.online);
  }
  const list = $("messages");
  const stick = list.scrollTop + list.clientHeight >= list.scrollHeight - 40;
  const entries = c ? [...c.entries.values()].filter((p) => !p.hidden).sort((a, b) => a.offset - b.offset) : [];
  list.replaceChildren(
    ...entries.map((p) => {
      if (entryKind(p) === "member") {
        return el("li", { class: "system", textContent: memberText(p), dataset: { offset: String(p.offset) } });
      }
      if (!isMessage(p)) return el("li", { hidden: true });
      const mine = p.sender === state.me;
      const cls = `msg ${mine ? "mine" : "theirs"}${p.data.state === "recalled" ? " recalled" : ""}`;
      const time = p.time ? new Date(p.time).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "";
      const meta = el("div", { class: "meta" }, time, p.data.state === "edited" ? " · edited" : "");
      if (mine) {
        const [s, label] = messageStatus(c, p);
        meta.append(" · ", el("span", { class: "status", textContent: label, dataset: { status: s, testid: "msg-status" } }));
      }
      return el(
        "li",
        { class: cls, dataset: { offset: String(p.offset), sender: p.sender || "", testid: "message" } },
        mine ? null : el("div", { class: "author", textContent: p.sender }),
        el("div", { class: "text", textContent: messageText(p) }),
        meta,
      );
    }),
  );
  if (stick) list.scrollTop = list.scrollHeight;
  const typing = c ? typingUsers(c) : [];
  $("typing").textContent = typing.length ? `${typing.join(", ")} ${typing.length > 1 ? "are" : "is"} typing…` : "";
}

// ---------------------------------------------------------------- wiring

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const err = $("login-error");
  err.hidden = true;
  try {
    await login($("login-user").value.trim());
  } catch (e2) {
    err.textContent = e2.message;
    err.hidden = false;
  }
});

$("logout").addEventListener("click", logout);

$("new-dm").addEventListener("submit", (e) => {
  e.preventDefault();
  openDm($("new-dm-user").value);
  $("new-dm-user").value = "";
});

$("new-group").addEventListener("submit", async (e) => {
  e.preventDefault();
  const name = $("group-name").value.trim();
  const members = $("group-members")
    .value.split(/[\s,]+/)
    .map((u) => u.trim().toLowerCase())
    .filter((u) => u && u !== state.me);
  try {
    await createGroup(name, members);
    $("group-name").value = "";
    $("group-members").value = "";
  } catch (err) {
    showError(err);
  }
});

$("composer").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = $("composer-input");
  const text = input.value.trim();
  if (!text || !state.open) return;
  const button = $("composer-send");
  button.disabled = true;
  try {
    await sendMessage(text);
    input.value = "";
  } catch (err) {
    showError(err);
  } finally {
    button.disabled = false;
    input.focus();
  }
});

$("composer-input").addEventListener("input", onComposerInput);
$("composer-input").addEventListener("blur", stopTyping);

document.addEventListener("visibilitychange", () => {
  const name = openConvName();
  if (name) markRead(state.convs.get(name));
});
