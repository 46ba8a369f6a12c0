/**
 * The TypeScript client of patterns-server.
 *
 * ```ts
 * import { PatternsClient, Policy } from "@patterns-server/client";
 * const client = PatternsClient.fromEnv(); // or new PatternsClient("host:port", { tls, apiKey })
 * const decision = await client.ratelimit.check("user:42", Policy.gcra(100, 60_000), { onUnavailable: "allow" });
 * ```
 *
 * 64-bit fields (counts, fencing tokens) are JavaScript numbers: exact below 2^53, which
 * every value the server sends stays under.
 */
// The grpc-js a program's credentials and metadata are made with must be the one the client
// runs on (grpc-js checks them with instanceof): @grpc/grpc-js is a peer dependency, so the
// program's own copy is the one; these re-exports are that same copy.
export { type ChannelCredentials, type ChannelOptions, Channel, credentials, Metadata, status } from "@grpc/grpc-js";

export { PatternsClient, type PatternsClientOptions, type TlsOptions, DEFAULT_TIMEOUT_MS } from "./client.js";
export { type CallOptions, FALLBACK_AFTER_MS } from "./calls.js";
export { PatternsError, LockNotAcquiredError, type FieldViolation, codeName, fallsBack, toPatternsError } from "./errors.js";
export {
  RateLimiter,
  Policy,
  type Algorithm,
  type Decision,
  type CheckOptions,
  type OnUnavailable,
} from "./ratelimit.js";
export { UniqueCounter } from "./counter.js";
export {
  Events,
  Subscription,
  type Event,
  type Gap,
  type SubscriptionItem,
  FIRST_BACKOFF_MS,
  LAST_BACKOFF_MS,
} from "./events.js";
export { Locks, HeldLock, type HoldOptions, type Lease, type LockState, type ReleaseStatus } from "./locks.js";
export {
  Cache,
  type Computed,
  type Entry,
  type GetOrComputeOptions,
  MISSING,
  LEASE_TTL_MS,
  FILL_WAIT_MS,
} from "./cache.js";
export { Leaderboard, type Board, type Standing, type SubmitMode } from "./leaderboard.js";
export { Sessions, type Session } from "./sessions.js";
export {
  Streams,
  Consumer,
  Message,
  type Appended,
  type ConsumeOptions,
  type ConsumerInfo,
  type GroupInfo,
  type Retention,
  type Start,
  type StreamEntry,
  type StreamInfo,
  CLOSE_SETTLE_MS,
} from "./streams.js";

// The generated messages and stubs, for what the wrappers do not cover.
export * as pb from "./pb.js";
