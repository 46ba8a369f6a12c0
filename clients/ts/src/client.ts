/** PatternsClient: one channel to patterns-server, one property per service. */
import { readFileSync } from "node:fs";
import { Channel, ChannelCredentials, type ChannelOptions, credentials, Metadata } from "@grpc/grpc-js";
import { CacheClient } from "./gen/patterns/cache/v1/cache.js";
import { UniqueCounterClient } from "./gen/patterns/counter/v1/counter.js";
import { EventsClient } from "./gen/patterns/events/v1/events.js";
import { LeaderboardClient } from "./gen/patterns/leaderboard/v1/leaderboard.js";
import { LockerClient } from "./gen/patterns/lock/v1/lock.js";
import { RateLimiterClient } from "./gen/patterns/ratelimit/v1/ratelimit.js";
import { SessionsClient } from "./gen/patterns/session/v1/session.js";
import { StreamsClient } from "./gen/patterns/streams/v1/streams.js";
import { Cache } from "./cache.js";
import { Calls } from "./calls.js";
import { CheckStream } from "./checkstream.js";
import { UniqueCounter } from "./counter.js";
import { Events } from "./events.js";
import { Leaderboard } from "./leaderboard.js";
import { Locks } from "./locks.js";
import { RateLimiter } from "./ratelimit.js";
import { Sessions } from "./sessions.js";
import { Streams } from "./streams.js";

/** The default deadline of every call, as the Python client's. */
export const DEFAULT_TIMEOUT_MS = 5_000;

/** TLS from PEM contents (as Node's `tls` takes them): `ca` the CA that signed the server's
 * certificate (absent: the system's roots); `cert` and `key` a client certificate and its
 * private key, for mutual TLS. */
export interface TlsOptions {
  ca?: string | Buffer;
  cert?: string | Buffer;
  key?: string | Buffer;
}

export interface PatternsClientOptions {
  /** The deadline of every call (default 5,000 ms); each call may give its own. */
  timeoutMs?: number;
  /** Sent with every call and stream as `authorization: Bearer <apiKey>`; needs TLS (or a
   * channel made elsewhere). */
  apiKey?: string;
  /**
   * TLS: "system" (or true) trusts the system's roots; PEM contents of a private CA and a
   * client certificate; or grpc-js ChannelCredentials of your own. Absent or false:
   * plaintext.
   */
  tls?: boolean | "system" | TlsOptions | ChannelCredentials;
  /** A grpc-js Channel made elsewhere (its own credentials and options) to call over;
   * close() leaves it open: its maker closes it. */
  channel?: Channel;
  /** grpc-js channel options of the channel this client makes. */
  channelOptions?: ChannelOptions;
  /** Metadata sent with every call. */
  metadata?: Metadata;
  /** Send `ratelimit.check`s over one shared RateLimiter.CheckStream (default true); false:
   * a unary Check each. */
  streamChecks?: boolean;
}

function channelCredentials(tls: PatternsClientOptions["tls"]): ChannelCredentials | undefined {
  if (tls === undefined || tls === false) {
    return undefined;
  }
  if (tls === true || tls === "system") {
    return credentials.createSsl();
  }
  if (tls instanceof ChannelCredentials) {
    return tls;
  }
  const files = tls as TlsOptions;
  if ((files.cert === undefined) !== (files.key === undefined)) {
    throw new TypeError("tls: cert and key go together (a certificate and its private key)");
  }
  const pem = (value: string | Buffer | undefined) => (value === undefined ? null : Buffer.from(value));
  // grpc-js's order: root certificates, private key, certificate chain.
  return credentials.createSsl(pem(files.ca), pem(files.key), pem(files.cert));
}

function withApiKey(metadata: Metadata | undefined, apiKey: string | undefined): Metadata {
  const all = metadata?.clone() ?? new Metadata();
  if (apiKey === undefined) {
    return all;
  }
  const key = apiKey.trim(); // a key read from a file often ends with a newline
  if (!key) {
    throw new TypeError("apiKey is empty");
  }
  if (!/^[\x20-\x7e]+$/.test(key)) {
    throw new TypeError("apiKey must be printable ASCII: it is sent as a header");
  }
  if (all.get("authorization").length > 0) {
    throw new TypeError("pass the API key as apiKey or as authorization metadata, not both");
  }
  all.set("authorization", `Bearer ${key}`);
  return all;
}

/**
 * A connection to patterns-server at `target` ("host:port"): `client.ratelimit`,
 * `client.counter`, `client.events`, `client.locks`, `client.cache`, `client.leaderboard`,
 * `client.sessions`, `client.streams`. Every call returns a promise, rejected with a PatternsError, within the
 * client's `timeoutMs` (5 s) unless the call says otherwise. One client per process, shared;
 * `close()` (or `using`) at the end ends its open streams and closes its channel.
 */
export class PatternsClient implements Disposable {
  readonly ratelimit: RateLimiter;
  readonly counter: UniqueCounter;
  readonly events: Events;
  readonly locks: Locks;
  readonly cache: Cache;
  readonly leaderboard: Leaderboard;
  readonly sessions: Sessions;
  readonly streams: Streams;
  /** The channel every call goes over. */
  readonly channel: Channel;
  readonly #calls: Calls;
  readonly #ownsChannel: boolean;

  constructor(target: string, options: PatternsClientOptions = {}) {
    const secure = channelCredentials(options.tls);
    // (_isSecure: grpc-js's own test, for credentials passed in, such as createInsecure().)
    const plaintext = secure === undefined || !secure._isSecure();
    if (options.apiKey !== undefined && plaintext && options.channel === undefined) {
      // Over plaintext anyone on the path could read the key and call as this team.
      throw new TypeError("an API key is sent only over TLS: pass tls (or a channel of your own)");
    }
    const metadata = withApiKey(options.metadata, options.apiKey); // throws before a channel opens
    this.#ownsChannel = options.channel === undefined;
    this.channel =
      options.channel ?? new Channel(target, secure ?? credentials.createInsecure(), options.channelOptions ?? {});
    this.#calls = new Calls(options.timeoutMs ?? DEFAULT_TIMEOUT_MS, metadata);
    // Every stub shares the one channel (its address and credentials are the channel's).
    const over = { channelOverride: this.channel };
    const insecure = credentials.createInsecure();
    const rateLimiter = new RateLimiterClient(target, insecure, over);
    const checkStream = options.streamChecks === false ? undefined : new CheckStream(this.#calls, rateLimiter);
    this.ratelimit = new RateLimiter(this.#calls, rateLimiter, checkStream);
    this.counter = new UniqueCounter(this.#calls, new UniqueCounterClient(target, insecure, over));
    this.events = new Events(this.#calls, new EventsClient(target, insecure, over));
    this.locks = new Locks(this.#calls, new LockerClient(target, insecure, over));
    this.cache = new Cache(this.#calls, new CacheClient(target, insecure, over));
    this.leaderboard = new Leaderboard(this.#calls, new LeaderboardClient(target, insecure, over));
    this.sessions = new Sessions(this.#calls, new SessionsClient(target, insecure, over));
    this.streams = new Streams(this.#calls, new StreamsClient(target, insecure, over));
  }

  /**
   * A client from the PATTERNS_* environment variables: PATTERNS_TARGET (default
   * localhost:50051), PATTERNS_API_KEY, PATTERNS_CA_FILE (TLS trusting that CA),
   * PATTERNS_CERT_FILE and PATTERNS_KEY_FILE (a client certificate, for mutual TLS).
   * `options` add to (and win over) what the environment says.
   */
  static fromEnv(options: PatternsClientOptions = {}, env: NodeJS.ProcessEnv = process.env): PatternsClient {
    const read = (file: string | undefined) => (file ? readFileSync(file) : undefined);
    const tls: TlsOptions | undefined = env.PATTERNS_CA_FILE
      ? { ca: read(env.PATTERNS_CA_FILE), cert: read(env.PATTERNS_CERT_FILE), key: read(env.PATTERNS_KEY_FILE) }
      : undefined;
    return new PatternsClient(env.PATTERNS_TARGET || "localhost:50051", {
      apiKey: env.PATTERNS_API_KEY || undefined,
      tls,
      ...options,
    });
  }

  /** End the client's open streams (subscriptions, consumers, held locks: the server releases them;
   * the check stream: its checks in progress reject CANCELLED) and close the channel it
   * made (not one it was given). */
  close(): void {
    for (const open of [...this.#calls.open]) {
      open.close();
    }
    if (this.#ownsChannel) {
      this.channel.close();
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
