// The protocol's JSON shapes (docs/protocol.md). Field names are the
// server's, so that the protocol reference documents them; epochs and
// message ids are decimal strings because they use all 64 bits.

/** A position in a durable stream. */
export interface StreamPosition {
  offset: number;
  /** Decimal string; "0" means "do not check the epoch". */
  epoch: string;
}

/** A publication, as pushed and as returned by `history`. */
export interface Publication {
  channel: string;
  /** Message id, a decimal string. */
  id: string;
  /** Present on durable streams (inboxes, channels with history, conversations). */
  offset?: number;
  epoch?: string;
  /** The publishing user; "" for the server API. */
  sender?: string;
  /** Unix ms when the server accepted it. */
  time?: number;
  /** The published JSON value (absent when the publication was binary). */
  data?: unknown;
  /** The published bytes, standard base64 (instead of `data`). */
  b64data?: string;
}

/** The `recovery` object of a subscribe reply (and of catchup results). */
export interface Recovery {
  recovered: boolean;
  epoch: string;
  offset: number;
  start_offset: number;
  replayed: number;
}

export interface PublishResult {
  id: string;
  offset: number;
  epoch: string;
  duplicate?: boolean;
}

export interface HistoryResult {
  stream: string;
  epoch: string;
  start_offset: number;
  next_offset: number;
  publications: Publication[];
}

export interface HistoryOptions {
  /** Exclusive lower offset bound (page forward from here). */
  since?: number;
  /** 1 to 1000; default 100. */
  limit?: number;
  reverse?: boolean;
  /** Backward paging: offsets below this, newest first. */
  before?: number;
  /** Unix ms, inclusive. */
  fromTime?: number;
  /** Unix ms, exclusive. */
  beforeTime?: number;
}

export interface ConnectInfo {
  clientId: string;
  user: string;
  /** Unix ms when the connection's token expires; absent: never. */
  expiresAtMs?: number;
  pingIntervalMs: number;
  shard: number;
}

export interface DisconnectInfo {
  code: number;
  reason: string;
  /** Whether the SDK will reconnect by itself. */
  reconnect: boolean;
}

export interface GroupView {
  name: string;
  role?: "owner" | "admin" | "member";
  member_count: number;
  visible_from: number;
  visible_to: number;
  left?: boolean;
  dissolved?: boolean;
  muted_all?: boolean;
}

/** A conversation as listed by `conv_list` and the sync at connect. */
export interface ConvInfo {
  conv: string;
  sid: string;
  /** The other user of a DM; "" for a group. */
  peer: string;
  epoch: string;
  last_offset: number;
  last_time_ms: number;
  last_msg_offset: number;
  read_offset: number;
  unread: number;
  group?: GroupView;
}

export interface ConvCursor {
  time_ms: number;
  sid: string;
}

export interface ImSync {
  convs: ConvInfo[];
  /** Keep it: the next connect's `im_since` (the SDK does). */
  token: string;
  more: boolean;
  /** The server cannot continue from the token given: drop what the device holds. */
  reset?: boolean;
  total_unread: number;
}

export interface PresenceState {
  user: string;
  online: boolean;
  last_seen_ms: number;
}

export type TypingState = "typing" | "stopped";

/** IM events, one `type` per protocol message. */
export type ImEvent =
  | ({ type: "sync" } & ImSync)
  | { type: "read"; conv: string; offset: number; unread: number; total_unread: number }
  | { type: "receipt"; conv: string; user: string; read: number }
  | { type: "typing"; conv: string; user: string; state: TypingState }
  | { type: "delivered"; conv: string; user: string; offset: number }
  | { type: "block"; user: string; blocked: boolean }
  | ({ type: "presence" } & PresenceState);

export type MsgKind = "text" | "custom" | "attachment";

export interface MsgSendParams {
  /** The peer of a DM; or give `conv`. */
  to?: string;
  /** A conversation you are in (`dm:...`, `grp:...`); or give `to`. */
  conv?: string;
  kind: MsgKind;
  data: unknown;
  clientMsgId?: string;
  /** Default true; false: this connection gets no push of its own message. */
  echo?: boolean;
}

export interface MsgSendResult {
  conv: string;
  id: string;
  offset: number;
  epoch: string;
  time: number;
  duplicate?: boolean;
}

export interface ReadResult {
  conv: string;
  offset: number;
  unread: number;
  total_unread: number;
}

export interface ConvListResult {
  convs: ConvInfo[];
  next?: ConvCursor;
  total_unread: number;
}

export interface ReceiptsResult {
  conv: string;
  receipts: { user: string; read: number; delivered: number }[];
  next?: string;
}

export interface CatchupFrom {
  conv: string;
  /** The last offset you have, or "cursor": this device's acknowledged cursor. */
  since: number | "cursor";
  epoch?: string;
}

export interface CatchupResult {
  convs: (Recovery & { conv: string; truncated: boolean })[];
}

export interface BlockResult {
  user: string;
  blocked: boolean;
  changed: boolean;
}

export interface BlocksListResult {
  users: { user: string; time_ms: number }[];
  next?: string;
}

export interface RecallEditResult {
  conv: string;
  offset: number;
  ref_offset: number;
  edits: number;
}

export interface ClearResult {
  conv: string;
  visible_from: number;
  unread: number;
  total_unread: number;
}

/** The ids of a group change's member entry. */
export interface GroupEntryResult {
  conv: string;
  id: string;
  offset: number;
  epoch: string;
  time: number;
  duplicate?: boolean;
}

export interface GroupMember {
  user: string;
  role: "owner" | "admin" | "member";
  joined_offset: number;
  joined_ms: number;
  muted_until_ms: number;
  added_by: string;
}

export interface GroupMembersResult {
  conv: string;
  members: GroupMember[];
  next?: string;
}

export interface GroupInfo {
  conv: string;
  name: string;
  info: string;
  owner: string;
  member_count: number;
  members_max: number;
  muted_all: boolean;
  dissolved: boolean;
  members_can_invite: boolean;
  last_offset: number;
}

export interface PresenceResult {
  users: PresenceState[];
}
