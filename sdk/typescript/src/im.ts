import type { Client } from "./client.js";
import type {
  BlockResult,
  BlocksListResult,
  CatchupFrom,
  CatchupResult,
  ClearResult,
  ConvCursor,
  ConvListResult,
  GroupEntryResult,
  GroupInfo,
  GroupMembersResult,
  MsgKind,
  MsgSendParams,
  MsgSendResult,
  PresenceResult,
  ReadResult,
  ReceiptsResult,
  RecallEditResult,
  TypingState,
} from "./types.js";

/**
 * The IM commands (docs/protocol.md "IM: direct conversations", "Groups",
 * "Presence"). Each resolves to the reply's result, with the server's field
 * names, or rejects with a RingcastError carrying its code.
 */
export class Im {
  constructor(private readonly client: Client) {}

  /** Without a `clientMsgId` the SDK makes one; a failure carries it as `err.clientMsgId`. */
  send(p: MsgSendParams): Promise<MsgSendResult> {
    const key = p.clientMsgId ?? this.client._newMsgId();
    const sent = this.client.call<MsgSendResult>("msg_send", {
      ...(p.to !== undefined ? { to: p.to } : {}),
      ...(p.conv !== undefined ? { conv: p.conv } : {}),
      kind: p.kind,
      data: p.data,
      client_msg_id: key,
      ...(p.echo !== undefined ? { echo: p.echo } : {}),
    });
    return this.client._keyed(
      key,
      sent.then((r) => {
        if (p.echo === false && !r.duplicate) this.client._ownMessage(r.conv, r.offset, String(r.epoch));
        return r;
      }),
    );
  }

  read(conv: string, offset: number): Promise<ReadResult> {
    return this.client.call("read", { conv, offset });
  }

  convList(o: { limit?: number; cursor?: ConvCursor } = {}): Promise<ConvListResult> {
    return this.client.call("conv_list", defined({ limit: o.limit, cursor: o.cursor }));
  }

  receipts(conv: string, o: { limit?: number; cursor?: string } = {}): Promise<ReceiptsResult> {
    return this.client.call("receipts", defined({ conv, limit: o.limit, cursor: o.cursor }));
  }

  catchup(convs: CatchupFrom[], o: { limitPerConv?: number } = {}): Promise<CatchupResult> {
    return this.client.call(
      "catchup",
      defined({ convs: convs.map((c) => defined({ ...c })), limit_per_conv: o.limitPerConv }),
    );
  }

  typing(conv: string, state: TypingState): Promise<Record<string, never>> {
    return this.client.call("typing", { conv, state });
  }

  recall(conv: string, offset: number): Promise<RecallEditResult> {
    return this.client.call("recall", { conv, offset });
  }

  edit(conv: string, offset: number, data: unknown, kind?: MsgKind): Promise<RecallEditResult> {
    return this.client.call("edit", defined({ conv, offset, data, kind }));
  }

  clear(conv: string, upto: number): Promise<ClearResult> {
    return this.client.call("clear", { conv, upto });
  }

  block(user: string): Promise<BlockResult> {
    return this.client.call("block", { user });
  }

  unblock(user: string): Promise<BlockResult> {
    return this.client.call("unblock", { user });
  }

  blocksList(o: { limit?: number; cursor?: string } = {}): Promise<BlocksListResult> {
    return this.client.call("blocks_list", defined({ limit: o.limit, cursor: o.cursor }));
  }

  groupCreate(o: {
    name: string;
    info?: string;
    members?: string[];
    membersCanInvite?: boolean;
    clientMsgId?: string;
  }): Promise<GroupEntryResult> {
    return this.client.call(
      "group_create",
      defined({
        name: o.name,
        info: o.info,
        members: o.members,
        members_can_invite: o.membersCanInvite,
        client_msg_id: o.clientMsgId,
      }),
    );
  }

  groupAdd(conv: string, users: string[]): Promise<GroupEntryResult> {
    return this.client.call("group_add", { conv, users });
  }

  groupRemove(conv: string, users: string[]): Promise<GroupEntryResult> {
    return this.client.call("group_remove", { conv, users });
  }

  groupLeave(conv: string): Promise<GroupEntryResult> {
    return this.client.call("group_leave", { conv });
  }

  groupRole(conv: string, user: string, role: "admin" | "member"): Promise<GroupEntryResult> {
    return this.client.call("group_role", { conv, user, role });
  }

  groupTransfer(conv: string, to: string): Promise<GroupEntryResult> {
    return this.client.call("group_transfer", { conv, to });
  }

  groupUpdate(conv: string, o: { name?: string; info?: string }): Promise<GroupEntryResult> {
    return this.client.call("group_update", defined({ conv, name: o.name, info: o.info }));
  }

  groupMute(conv: string, user: string, untilMs: number): Promise<GroupEntryResult> {
    return this.client.call("group_mute", { conv, user, until_ms: untilMs });
  }

  groupUnmute(conv: string, user: string): Promise<GroupEntryResult> {
    return this.client.call("group_unmute", { conv, user });
  }

  groupMuteAll(conv: string, on = true): Promise<GroupEntryResult> {
    return this.client.call("group_mute_all", { conv, on });
  }

  groupDissolve(conv: string): Promise<GroupEntryResult> {
    return this.client.call("group_dissolve", { conv });
  }

  groupMembers(conv: string, o: { after?: string; limit?: number } = {}): Promise<GroupMembersResult> {
    return this.client.call("group_members", defined({ conv, after: o.after, limit: o.limit }));
  }

  groupInfo(conv: string): Promise<GroupInfo> {
    return this.client.call("group_info", { conv });
  }

  presenceWatch(users: string[]): Promise<PresenceResult> {
    return this.client.call("presence_watch", { users });
  }

  presenceUnwatch(users: string[]): Promise<Record<string, never>> {
    return this.client.call("presence_unwatch", { users });
  }

  /** The state of `users`, or of a conversation's members with `{conv}`. */
  presenceQuery(target: string[] | { conv: string }): Promise<PresenceResult> {
    return this.client.call("presence_query", Array.isArray(target) ? { users: target } : { conv: target.conv });
  }
}

/** Sends only the optional fields given, so that the server's defaults apply to the rest. */
function defined(o: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v;
  return out;
}
