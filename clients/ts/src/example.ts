/**
 * Calls every service of patterns-server once, as a team would from TypeScript, and prints
 * one line per step. Usage: node dist/example.js [host:port]. The connection comes from the
 * environment: PATTERNS_TARGET (host:port, default localhost:50051; an argument wins),
 * PATTERNS_API_KEY, PATTERNS_CA_FILE (TLS, trusting that CA), and PATTERNS_CERT_FILE with
 * PATTERNS_KEY_FILE (a client certificate, for mutual TLS).
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { makeGenericClientConstructor } from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";
import {
  type ChannelCredentials,
  credentials,
  Metadata,
  type ServiceError,
  cache,
  counter,
  errorDetails,
  events,
  leaderboard,
  lock,
  messages,
  ratelimit,
  session,
  unary,
} from "./index";

/** PEM files: the CA the server's certificate chains to (none: plaintext), and this
 * client's certificate and key, for a server that asks for one (mutual TLS). */
interface TlsFiles {
  ca?: string;
  cert?: string;
  key?: string;
}

/** The credentials of every client of one server: TLS when a CA is given, and the API key
 * (when given) on every call and stream. */
function channelCredentials(apiKey: string | undefined, tls: TlsFiles): ChannelCredentials {
  if (!tls.ca) {
    // Over plaintext anyone on the path could read the key and call as this team.
    if (apiKey) {
      throw new Error("an API key is sent only over TLS: set PATTERNS_CA_FILE");
    }
    return credentials.createInsecure();
  }
  const pem = (file?: string) => (file ? readFileSync(file) : null);
  const channel = credentials.createSsl(readFileSync(tls.ca), pem(tls.key), pem(tls.cert));
  if (!apiKey) {
    return channel;
  }
  const bearer = credentials.createFromMetadataGenerator((_call, callback) => {
    const metadata = new Metadata();
    metadata.set("authorization", `Bearer ${apiKey}`);
    callback(null, metadata);
  });
  return credentials.combineChannelCredentials(channel, bearer);
}

const env = process.env;
const target = process.argv[2] || env.PATTERNS_TARGET || "localhost:50051";
const creds = channelCredentials(env.PATTERNS_API_KEY, {
  ca: env.PATTERNS_CA_FILE,
  cert: env.PATTERNS_CERT_FILE,
  key: env.PATTERNS_KEY_FILE,
});
const run = randomBytes(4).toString("hex");
const minute = { seconds: 60, nanos: 0 };
const inSeconds = (seconds: number): Date => new Date(Date.now() + seconds * 1000);

async function main(): Promise<void> {
  // Health: Check, and the first answer of Watch (the health service's own stubs).
  const Health = makeGenericClientConstructor(healthService, "grpc.health.v1.Health");
  const health = new Health(target, creds) as any;
  const checked = await new Promise<any>((resolve, reject) =>
    health.Check({ service: "" }, { deadline: inSeconds(5) }, (error: Error | null, response: any) =>
      error ? reject(error) : resolve(response),
    ),
  );
  const watch = health.Watch({ service: "patterns.cache.v1.Cache" }, { deadline: inSeconds(5) });
  const watched = await new Promise<any>((resolve, reject) => {
    watch.once("data", resolve);
    watch.once("error", reject);
  });
  watch.on("error", () => undefined); // the cancellation below
  watch.cancel();
  console.log("health:", checked.status, watched.status);

  // RateLimiter: GCRA, 3 per 60 s, checked 4 times; then two policies all or nothing.
  const limiter = new ratelimit.RateLimiterClient(target, creds);
  const policy = ratelimit.Policy.fromPartial({ algorithm: ratelimit.Algorithm.GCRA, limit: 3, period: minute });
  const allowed: boolean[] = [];
  let retryAfterMs = 0;
  for (let i = 0; i < 4; i++) {
    const decision = await unary(limiter.check.bind(limiter), ratelimit.CheckRequest.fromPartial({ key: `user:${run}`, policy }));
    allowed.push(decision.allowed);
    retryAfterMs = (decision.retryAfter?.seconds ?? 0) * 1000 + (decision.retryAfter?.nanos ?? 0) / 1e6;
  }
  console.log("ratelimit check:", allowed.join(","), "retry_after>0:", retryAfterMs > 0);
  const daily = ratelimit.Policy.fromPartial({
    algorithm: ratelimit.Algorithm.FIXED_WINDOW,
    limit: 1000,
    period: { seconds: 86_400, nanos: 0 },
  });
  const many = await unary(
    limiter.checkMany.bind(limiter),
    ratelimit.CheckManyRequest.fromPartial({
      allOrNothing: true,
      checks: [
        { key: `api:${run}`, policy },
        { key: `api:${run}`, policy: daily },
      ],
    }),
  );
  console.log("ratelimit check_many:", many.allowed, many.results.length);

  // UniqueCounter: Add, then Count.
  const counters = new counter.UniqueCounterClient(target, creds);
  await unary(counters.add.bind(counters), counter.AddRequest.fromPartial({ key: `visitors:${run}`, items: ["ann", "bob", "ann"] }));
  const count = await unary(counters.count.bind(counters), counter.CountRequest.fromPartial({ keys: [`visitors:${run}`] }));
  console.log("counter count:", count.count);

  // Events: Subscribe, wait for `subscribed`, Publish, receive the message.
  const eventsClient = new events.EventsClient(target, creds);
  const subscription = eventsClient.subscribe(events.SubscribeRequest.fromPartial({ channels: [`orders:${run}`] }), {
    deadline: inSeconds(10),
  });
  const received = messages(subscription);
  const first = (await received.next()).value as events.SubscribeResponse;
  await unary(
    eventsClient.publish.bind(eventsClient),
    events.PublishRequest.fromPartial({ channel: `orders:${run}`, payload: Buffer.from("order 42") }),
  );
  const message = (await received.next()).value as events.SubscribeResponse;
  subscription.cancel();
  console.log("events:", first.subscribed !== undefined, Buffer.from(message.event?.payload ?? []).toString());

  // Locker: Acquire and Release; then Hold, which a cancel releases.
  const locker = new lock.LockerClient(target, creds);
  const name = `report:${run}`;
  const lease = await unary(locker.acquire.bind(locker), lock.AcquireRequest.fromPartial({ name, ttl: { seconds: 30, nanos: 0 } }));
  const released = await unary(locker.release.bind(locker), lock.ReleaseRequest.fromPartial({ name, token: lease.token }));
  // A Hold's deadline is the longest it may keep the lock; cancelling releases it sooner.
  const hold = locker.hold(lock.HoldRequest.fromPartial({ name, ttl: { seconds: 30, nanos: 0 } }), {
    deadline: inSeconds(60),
  });
  const held = (await messages(hold).next()).value as lock.HoldResponse;
  hold.on("error", () => undefined); // the cancellation below
  hold.cancel();
  let freed = false;
  for (let i = 0; i < 100 && !freed; i++) {
    freed = !(await unary(locker.inspect.bind(locker), lock.InspectRequest.fromPartial({ name }))).held;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  console.log("locker:", lease.acquired, lock.releaseStatusToJSON(released.status), held.acquired !== undefined, "freed:", freed);

  // Cache: Set with a tag, Get, InvalidateTags.
  const caches = new cache.CacheClient(target, creds);
  await unary(
    caches.set.bind(caches),
    cache.SetRequest.fromPartial({ key: `page:${run}`, value: Buffer.from("<html>"), ttl: minute, tags: [`pages:${run}`] }),
  );
  const got = await unary(caches.get.bind(caches), cache.GetRequest.fromPartial({ key: `page:${run}` }));
  const invalidated = await unary(caches.invalidateTags.bind(caches), cache.InvalidateTagsRequest.fromPartial({ tags: [`pages:${run}`] }));
  console.log("cache:", Buffer.from(got.value).toString(), invalidated.deleted);

  // Leaderboard: Submit, Top.
  const boards = new leaderboard.LeaderboardClient(target, creds);
  for (const [member, score] of [["ann", 1200], ["bob", 1100]] as const) {
    await unary(boards.submit.bind(boards), leaderboard.SubmitRequest.fromPartial({ board: `chess:${run}`, member, score }));
  }
  const top = await unary(boards.top.bind(boards), leaderboard.TopRequest.fromPartial({ board: `chess:${run}`, limit: 10 }));
  console.log("leaderboard:", top.entries[0].member, top.entries[0].rank, top.total);

  // Sessions: Create, Get with touch, Destroy.
  const sessions = new session.SessionsClient(target, creds);
  const created = await unary(
    sessions.create.bind(sessions),
    session.CreateRequest.fromPartial({ userId: `u:${run}`, ttl: { seconds: 1800, nanos: 0 }, attributes: { agent: "ts" } }),
  );
  const id = created.session?.id ?? "";
  const current = await unary(sessions.get.bind(sessions), session.GetRequest.fromPartial({ id, touch: true }));
  const destroyed = await unary(sessions.destroy.bind(sessions), session.DestroyRequest.fromPartial({ id }));
  console.log("sessions:", current.session?.attributes.agent, destroyed.destroyed);

  // A bad request, read back through the error helper.
  try {
    await unary(limiter.check.bind(limiter), ratelimit.CheckRequest.fromPartial({ key: "", policy }));
    throw new Error("an empty key was accepted");
  } catch (error) {
    const details = errorDetails(error as ServiceError);
    console.log("invalid:", details.code, details.fieldViolations[0]?.field, details.reason);
  }
  for (const client of [health, limiter, counters, eventsClient, locker, caches, boards, sessions]) {
    client.close();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
