/** `client.sessions`: server-side sessions with attributes, sliding expiry, per-user lists. */
import { status } from "@grpc/grpc-js";
import type * as pb from "./gen/patterns/session/v1/session.js";
import { type CallOptions, type Calls, duration } from "./calls.js";
import { PatternsError } from "./errors.js";

/** A session: `id` is its secret; times are the Redis clock's. */
export interface Session {
  id: string;
  userId: string;
  attributes: Record<string, string>;
  createdAt: Date | undefined;
  lastSeenAt: Date | undefined;
  expiresAt: Date | undefined;
}

function session(message: pb.Session | undefined): Session {
  if (message === undefined) {
    throw new PatternsError(status.INTERNAL, "the server answered without a session");
  }
  const { id, userId, attributes, createdAt, lastSeenAt, expiresAt } = message;
  return { id, userId, attributes, createdAt, lastSeenAt, expiresAt };
}

export class Sessions {
  /** @internal */
  constructor(
    private readonly calls: Calls,
    private readonly stub: pb.SessionsClient,
  ) {}

  /** A new session of `userId` for `ttlMs` (1 s to 365 days), slid on each touch; with
   * `maxPerUser`, the user's oldest sessions end beyond that many. */
  async create(
    userId: string,
    options: CallOptions & { ttlMs: number; attributes?: Record<string, string>; maxPerUser?: number },
  ): Promise<Session> {
    const request = {
      userId,
      attributes: options.attributes ?? {},
      ttl: duration(options.ttlMs),
      maxPerUser: options.maxPerUser ?? 0,
    };
    return session((await this.calls.unary(this.stub.create.bind(this.stub), request, options)).session);
  }

  /** The session (with `touch`, its end slid to its ttl from now); null when it has ended,
   * or never was. */
  async get(id: string, options: CallOptions & { touch?: boolean } = {}): Promise<Session | null> {
    try {
      const request = { id, touch: options.touch ?? false };
      return session((await this.calls.unary(this.stub.get.bind(this.stub), request, options)).session);
    } catch (error) {
      if (error instanceof PatternsError && error.code === status.NOT_FOUND) {
        return null;
      }
      throw error;
    }
  }

  /** Set and remove attributes; the session after. */
  async update(
    id: string,
    change: { set?: Record<string, string>; remove?: readonly string[] },
    options: CallOptions = {},
  ): Promise<Session> {
    const request = { id, set: change.set ?? {}, remove: [...(change.remove ?? [])] };
    return session((await this.calls.unary(this.stub.update.bind(this.stub), request, options)).session);
  }

  /** End the session; whether it existed. */
  async destroy(id: string, options: CallOptions = {}): Promise<boolean> {
    return (await this.calls.unary(this.stub.destroy.bind(this.stub), { id }, options)).destroyed;
  }

  /** A page of the user's sessions, the user's total, and the next page's token ("" at the end). */
  async list(
    userId: string,
    options: CallOptions & { limit?: number; pageToken?: string } = {},
  ): Promise<{ sessions: Session[]; total: number; nextPageToken: string }> {
    const request = { userId, limit: options.limit ?? 0, pageToken: options.pageToken ?? "" };
    const response = await this.calls.unary(this.stub.list.bind(this.stub), request, options);
    return { sessions: response.sessions.map(session), total: response.total, nextPageToken: response.nextPageToken };
  }

  /** End every session of the user but `exceptId`; how many ended. */
  async destroyAll(userId: string, options: CallOptions & { exceptId?: string } = {}): Promise<number> {
    const request = { userId, exceptId: options.exceptId ?? "" };
    return (await this.calls.unary(this.stub.destroyAll.bind(this.stub), request, options)).destroyed;
  }

  /** The session under a new id (after a login, say); the old id no longer works. */
  async rotate(id: string, options: CallOptions = {}): Promise<Session> {
    return session((await this.calls.unary(this.stub.rotate.bind(this.stub), { id }, options)).session);
  }
}
