/** The generated messages and grpc-js stubs (ts-proto), one namespace per service. */
export * as cache from "./gen/patterns/cache/v1/cache.js";
export * as counter from "./gen/patterns/counter/v1/counter.js";
export * as errors from "./gen/patterns/errors/v1/errors.js";
export * as events from "./gen/patterns/events/v1/events.js";
export * as leaderboard from "./gen/patterns/leaderboard/v1/leaderboard.js";
export * as lock from "./gen/patterns/lock/v1/lock.js";
export * as ratelimit from "./gen/patterns/ratelimit/v1/ratelimit.js";
export * as session from "./gen/patterns/session/v1/session.js";
export * as streams from "./gen/patterns/streams/v1/streams.js";
