/**
 * Against a live server: PATTERNS_TARGET (a plaintext server, as `make test` starts one).
 * These tests fail, not skip, when it is unset. The fallbacks are tested against real
 * sockets that cannot answer: a port nothing listens on, and one that accepts and stays
 * silent (as a paused server does).
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { connect, createServer, type Server, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import {
  type Decision,
  LockNotAcquiredError,
  PatternsClient,
  type PatternsClientOptions,
  PatternsError,
  Policy,
  status,
  type SubscriptionItem,
  type Consumer,
  type Message,
} from "../src/index.js";

function target(): string {
  const value = process.env.PATTERNS_TARGET;
  assert.ok(value, "PATTERNS_TARGET is not set: these tests need a live server (host:port)");
  return value;
}

/** The Prometheus metrics of the server at PATTERNS_TARGET (PATTERNS_METRICS_URL). */
function metricsUrl(): string {
  const value = process.env.PATTERNS_METRICS_URL;
  assert.ok(value, "PATTERNS_METRICS_URL is not set: these tests read the server's metrics (http://host:port/metrics)");
  return value;
}

const RATE_LIMITER = "patterns.ratelimit.v1.RateLimiter";

/** What the server has served, from one scrape: unary Checks (any code), and CheckStreams
 * open and ended (their sum grows by one per stream opened, whenever it ends). */
async function served(): Promise<{ checks: number; streams: number; open: number }> {
  const text = await (await fetch(metricsUrl())).text();
  let checks = 0;
  let streams = 0;
  let open = 0;
  for (const line of text.split("\n")) {
    const sample = /^(\w+)\{([^}]*)\} (\S+)$/.exec(line);
    if (sample === null || !sample[2].includes(`service="${RATE_LIMITER}"`)) {
      continue;
    }
    const [, metric, labels, value] = sample;
    if (metric === "patterns_rpcs_total" && labels.includes('method="Check"')) {
      checks += Number(value);
    } else if (
      (metric === "patterns_rpcs_total" || metric === "patterns_streams_open") &&
      labels.includes('method="CheckStream"')
    ) {
      streams += Number(value);
      open += metric === "patterns_streams_open" ? Number(value) : 0;
    }
  }
  return { checks, streams, open };
}

/** The counts once no CheckStream is open on the server (every client closed): a scrape
 * reads one metric after the other, so a stream ending meanwhile could be half counted. */
async function quiet(): Promise<{ checks: number; streams: number }> {
  let counts = await served();
  const settled = await eventually(10_000, async () => {
    counts = await served();
    return counts.open === 0;
  });
  assert.ok(settled, "CheckStreams still open on the server");
  return counts;
}

/** How many unary Checks and CheckStreams the server saw while `work` ran (which closes its
 * clients). */
async function metered<T>(work: () => Promise<T>): Promise<{ result: T; checks: number; streams: number }> {
  const before = await quiet();
  const result = await work();
  const after = await quiet();
  return { result, checks: after.checks - before.checks, streams: after.streams - before.streams };
}

/** `use(client)` with a client to `to` (PATTERNS_TARGET), closed after. */
async function using<T>(
  options: PatternsClientOptions,
  use: (client: PatternsClient) => Promise<T>,
  to = target(),
): Promise<T> {
  const client = new PatternsClient(to, options);
  try {
    return await use(client);
  } finally {
    client.close();
  }
}

const run = randomBytes(6).toString("hex");
const name = (what: string) => `ts-test:${what}:${run}`;

/** Whether `check()` comes true within `ms`, asking every 25 ms. */
async function eventually(ms: number, check: () => Promise<boolean>): Promise<boolean> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) {
      return false;
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return true;
}

/** The next item of a subscription within `ms`. */
async function nextItem(items: AsyncIterator<SubscriptionItem>, ms = 10_000): Promise<SubscriptionItem> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no item within ${ms} ms`)), ms);
  });
  try {
    const result = await Promise.race([items.next(), late]);
    assert.ok(!result.done, "the subscription ended");
    return result.value;
  } finally {
    clearTimeout(timer);
  }
}

describe("every service, against PATTERNS_TARGET", () => {
  let client: PatternsClient;
  before(() => {
    client = new PatternsClient(target());
  });
  after(() => client.close());

  it("rate limits, and refuses a bad argument with its details", async () => {
    const policy = Policy.gcra(3, 60_000);
    const allowed = [];
    for (let i = 0; i < 4; i++) {
      allowed.push(await client.ratelimit.check(name("rl"), policy));
    }
    assert.deepEqual(
      allowed.map((d) => d.allowed),
      [true, true, true, false],
    );
    assert.ok(allowed[3].retryAfterMs > 0);
    assert.equal(allowed[0].limit, 3);
    assert.equal(allowed[0].fallback, false);
    // All or nothing: one key under two policies (a burst limit and a daily quota).
    const many = await client.ratelimit.checkMany(
      [
        [name("rl-a"), policy],
        [name("rl-a"), Policy.fixedWindow(1_000, 86_400_000)],
      ],
      { allOrNothing: true },
    );
    assert.equal(many.allowed, true);
    assert.equal(many.decisions.length, 2);
    await client.ratelimit.reset(name("rl"), policy);
    assert.ok((await client.ratelimit.check(name("rl"), policy)).allowed);
    const refused = await client.ratelimit.check("", policy).catch((error: unknown) => error);
    assert.ok(refused instanceof PatternsError);
    assert.equal(refused.codeName, "INVALID_ARGUMENT");
    assert.equal(refused.fieldViolations[0]?.field, "key");
    assert.equal(refused.reason, "INVALID_ARGUMENT");
  });

  it("counts unique items", async () => {
    assert.equal(await client.counter.add(name("c1"), ["a", "b", "a"]), true);
    await client.counter.add(name("c2"), ["b", "c"], { ttlMs: 60_000 });
    assert.equal(await client.counter.count(name("c1")), 2);
    assert.equal(await client.counter.count([name("c1"), name("c2")]), 3);
    assert.equal(await client.counter.merge(name("c3"), [name("c1"), name("c2")]), 3);
  });

  it("keeps a leaderboard", async () => {
    const board = name("board");
    await client.leaderboard.submit(board, "ann", 10);
    await client.leaderboard.submit(board, "bob", 5);
    assert.deepEqual((await client.leaderboard.submit(board, "cid", 1, { mode: "INCREMENT" })).rank, 3);
    const top = await client.leaderboard.top(board, { limit: 2 });
    assert.deepEqual(
      top.entries.map((e) => [e.member, e.rank]),
      [
        ["ann", 1],
        ["bob", 2],
      ],
    );
    assert.equal(top.total, 3);
    assert.deepEqual(await client.leaderboard.rank(board, "bob"), { member: "bob", score: 5, rank: 2 });
    assert.equal(await client.leaderboard.rank(board, "nobody"), null);
    assert.equal((await client.leaderboard.around(board, "bob", { radius: 1 })).length, 3);
    assert.equal(await client.leaderboard.remove(board, ["cid"]), 1);
    assert.equal(await client.leaderboard.size(board), 2);
    assert.equal(await client.leaderboard.size({ name: board, order: "LOW_FIRST", period: "DAILY" }), 0);
  });

  it("keeps sessions", async () => {
    const user = name("user");
    const session = await client.sessions.create(user, { attributes: { agent: "ts" }, ttlMs: 60_000 });
    assert.equal(session.userId, user);
    assert.equal((await client.sessions.get(session.id, { touch: true }))?.attributes.agent, "ts");
    const updated = await client.sessions.update(session.id, { set: { plan: "pro" }, remove: ["agent"] });
    assert.deepEqual(updated.attributes, { plan: "pro" });
    const rotated = await client.sessions.rotate(session.id);
    assert.notEqual(rotated.id, session.id);
    assert.equal(await client.sessions.get(session.id), null);
    const other = await client.sessions.create(user, { ttlMs: 60_000 });
    assert.equal((await client.sessions.list(user)).total, 2);
    assert.equal(await client.sessions.destroyAll(user, { exceptId: other.id }), 1);
    assert.equal(await client.sessions.destroy(other.id), true);
    assert.equal(await client.sessions.get(other.id), null);
  });

  it("caches values with tags", async () => {
    assert.equal(await client.cache.set(name("k1"), "v1", { ttlMs: 60_000, tags: [name("tag")] }), true);
    await client.cache.set(name("k2"), Buffer.from([0, 1, 2]));
    const entry = await client.cache.get(name("k1"));
    assert.equal(entry?.value.toString(), "v1");
    assert.ok((entry?.ttlRemainingMs ?? 0) > 0);
    const [first, second, missing] = await client.cache.getMany([name("k1"), name("k2"), name("none")]);
    assert.equal(first?.value.toString(), "v1");
    assert.deepEqual([...(second?.value ?? [])], [0, 1, 2]);
    assert.equal(missing, null);
    assert.equal(await client.cache.set(name("k1"), "v2", { onlyIfAbsent: true }), false);
    assert.equal(await client.cache.invalidateTags([name("tag")]), 1);
    assert.equal(await client.cache.delete(name("k2")), 1);
    await client.cache.set(`${name("p")}:1`, "x");
    assert.equal(await client.cache.invalidatePrefix(`${name("p")}:`), 1);
  });

  it("computes a cold key once, and gives the lease back when compute fails", async () => {
    let computed = 0;
    const compute = async () => {
      computed += 1;
      return "v1";
    };
    assert.equal((await client.cache.getOrCompute(name("goc"), compute, { ttlMs: 60_000 })).toString(), "v1");
    assert.equal((await client.cache.getOrCompute(name("goc"), compute)).toString(), "v1");
    assert.equal(computed, 1);

    const failure = new Error("the source failed");
    await assert.rejects(
      client.cache.getOrCompute(name("fail"), () => Promise.reject(failure)),
      (error) => error === failure,
    );
    // The lease was released: the next caller gets it at once, not after the 20 s wait.
    const started = Date.now();
    assert.equal((await client.cache.getOrCompute(name("fail"), () => "v2", { waitMs: 20_000 })).toString(), "v2");
    assert.ok(Date.now() - started < 10_000);

    // "Not found", cached as such when asked to.
    assert.equal(await client.cache.getOrCompute(name("absent"), () => null, { cacheMissesForMs: 60_000 }), null);
    assert.equal(
      await client.cache.getOrCompute(name("absent"), () => "never", { cacheMissesForMs: 60_000 }),
      null,
    );
  });

  it("takes, extends, inspects and releases leases", async () => {
    const lock = name("lease");
    const lease = await client.locks.acquire(lock, { ttlMs: 10_000 });
    assert.ok(lease !== null && lease.fencingToken > 0);
    assert.equal(await client.locks.acquire(lock, { ttlMs: 10_000, waitMs: 100 }), null);
    assert.ok((await client.locks.extend(lease, { ttlMs: 20_000 })) !== null);
    const state = await client.locks.inspect(lock);
    assert.ok(state.held && state.ttlRemainingMs > 10_000);
    assert.equal(state.fencingToken, lease.fencingToken);
    assert.equal(await client.locks.release(lease), "RELEASED");
    assert.equal(await client.locks.release(lease), "NOT_HELD");
    assert.equal(await client.locks.forceRelease(lock), false);
  });

  it("holds a lock for a block and releases it at the end", async () => {
    const lock = name("hold");
    let token = 0;
    {
      await using held = await client.locks.hold(lock, { ttlMs: 3_000 });
      token = held.fencingToken;
      assert.ok(token > 0);
      assert.ok(!held.signal.aborted);
      assert.ok((await client.locks.inspect(lock)).held);
      await assert.rejects(client.locks.hold(lock, { ttlMs: 3_000, waitMs: 100 }), LockNotAcquiredError);
    }
    assert.ok(await eventually(5_000, async () => !(await client.locks.inspect(lock)).held));
    // try/finally works as well as `await using`.
    const held = await client.locks.hold(lock, { ttlMs: 3_000 });
    try {
      assert.ok(held.fencingToken > token);
    } finally {
      await held.release();
    }
  });

  it("reports a lost lock through the signal, and releasing it then does not throw", async () => {
    const lock = name("lost");
    const held = await client.locks.hold(lock, { ttlMs: 1_500 });
    assert.equal(await client.locks.forceRelease(lock), true);
    assert.ok(await eventually(10_000, async () => held.signal.aborted));
    assert.ok(held.lost);
    assert.ok(held.signal.reason instanceof PatternsError);
    await held.release();
  });

  it("subscribes, waits until subscribed, and receives events one by one", async () => {
    const channel = name("orders");
    const subscription = client.events.subscribe({ channels: [channel] });
    await subscription.waitSubscribed({ timeoutMs: 10_000 });
    assert.ok(subscription.subscribed);
    for (const payload of ["1", "2", "3"]) {
      await client.events.publish(channel, payload);
    }
    const received = [];
    for await (const item of subscription) {
      assert.equal(item.type, "event");
      if (item.type === "event") {
        assert.equal(item.channel, channel);
        received.push(item.payload.toString());
      }
      if (received.length === 3) {
        break; // leaving the loop ends the subscription
      }
    }
    assert.deepEqual(received, ["1", "2", "3"]);
    assert.equal((await subscription.next()).done, true);
  });

  it("ends a subscription when its signal aborts", async () => {
    const stop = new AbortController();
    const subscription = client.events.subscribe({ channels: [name("stopped")], signal: stop.signal });
    await subscription.waitSubscribed({ timeoutMs: 10_000 });
    const pending = subscription.next();
    stop.abort();
    assert.equal((await pending).done, true);
  });

  it("matches patterns", async () => {
    await using subscription = client.events.subscribe({ patterns: [name("room:*")] });
    await subscription.waitSubscribed({ timeoutMs: 10_000 });
    await client.events.publish(name("room:1"), Buffer.from("hi"));
    const item = await nextItem(subscription);
    assert.ok(item.type === "event" && item.pattern === name("room:*") && item.payload.toString() === "hi");
  });
});


/** The next message of a consumer within `ms`. */
async function nextMessage(consumer: Consumer, ms = 10_000): Promise<Message> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no message within ${ms} ms`)), ms);
  });
  try {
    const result = await Promise.race([consumer.next(), late]);
    assert.ok(!result.done, "the consumer ended");
    return result.value;
  } finally {
    clearTimeout(timer);
  }
}

/** Acks every message of `consumer` into `seen` (payload -> times seen) until closed. */
async function drain(consumer: Consumer, seen: Map<string, number>): Promise<void> {
  for await (const message of consumer) {
    const key = message.payload.toString();
    seen.set(key, (seen.get(key) ?? 0) + 1);
    message.ack();
  }
}

describe("streams, against PATTERNS_TARGET", () => {
  let client: PatternsClient;
  before(() => {
    client = new PatternsClient(target());
  });
  after(() => client.close());

  it("shares a group's entries among its consumers exactly once, and gives every group all", async () => {
    const stream = name("orders");
    const count = 200;
    const consumers = [
      client.streams.consume({ stream, group: "a", consumer: "a1", start: "earliest", maxInFlight: 20 }),
      client.streams.consume({ stream, group: "a", consumer: "a2", start: "earliest", maxInFlight: 20 }),
      client.streams.consume({ stream, group: "b", consumer: "b1", start: "earliest", maxInFlight: 50 }),
    ];
    await Promise.all(consumers.map((each) => each.waitSubscribed({ timeoutMs: 10_000 })));
    const [a1, a2, b] = [new Map<string, number>(), new Map<string, number>(), new Map<string, number>()];
    const draining = [drain(consumers[0], a1), drain(consumers[1], a2), drain(consumers[2], b)];
    for (let i = 0; i < count; i++) {
      await client.streams.append(stream, `entry-${i}`, { headers: { n: String(i) } });
    }
    const total = (seen: Map<string, number>) => [...seen.values()].reduce((sum, n) => sum + n, 0);
    assert.ok(await eventually(20_000, async () => total(a1) + total(a2) >= count && total(b) >= count));
    // Every entry acked: nothing pending, so nothing can come again.
    assert.ok(
      await eventually(10_000, async () => (await client.streams.info(stream)).groups.every((g) => g.pending === 0)),
    );
    await Promise.all(consumers.map((each) => each.close()));
    await Promise.all(draining);
    assert.equal(total(a1) + total(a2), count);
    assert.equal(new Set([...a1.keys(), ...a2.keys()]).size, count);
    assert.equal(total(b), count);
    assert.equal(b.size, count);
    const info = await client.streams.info(stream);
    assert.equal(info.length, count);
    assert.deepEqual(info.groups.map((g) => g.name).sort(), ["a", "b"]);
    assert.ok(info.groups.every((g) => g.pending === 0 && g.lag === 0));
  });

  it("redelivers an unacked message after its ack timeout, and a nacked one after its delay", async () => {
    const stream = name("redeliver");
    await using consumer = client.streams.consume({ stream, group: "g", consumer: "c", ackTimeoutMs: 300 });
    await consumer.waitSubscribed({ timeoutMs: 10_000 });
    const appended = await client.streams.append(stream, "once", { headers: { kind: "test" } });
    const first = await nextMessage(consumer);
    assert.equal(first.id, appended.id);
    assert.equal(first.deliveryCount, 1);
    assert.equal(first.headers.kind, "test");
    assert.ok(first.firstDeliveredAt instanceof Date);
    const second = await nextMessage(consumer); // not acked: back after the timeout
    assert.equal(second.id, appended.id);
    assert.equal(second.deliveryCount, 2);
    assert.throws(() => second.nack(60_000), (error: PatternsError) => error.code === status.INVALID_ARGUMENT);
    const nackedAt = Date.now();
    second.nack(200);
    const third = await nextMessage(consumer);
    assert.equal(third.id, appended.id);
    assert.equal(third.deliveryCount, 3);
    assert.ok(Date.now() - nackedAt >= 150, "a nack's delay is kept");
    third.ack();
    await consumer.close();
    assert.throws(() => third.ack(), (error: PatternsError) => error.code === status.CANCELLED);
    assert.ok(
      await eventually(10_000, async () => (await client.streams.info(stream)).groups[0]?.pending === 0),
    );
  });

  it("appends once per idempotency key, reads, trims, sets retention and deletes groups", async () => {
    const stream = name("idem");
    const first = await client.streams.append(stream, "x", { idempotencyKey: "k1" });
    const again = await client.streams.append(stream, "y", { idempotencyKey: "k1" });
    assert.equal(first.duplicate, false);
    assert.equal(again.duplicate, true);
    assert.equal(again.id, first.id);
    for (let i = 0; i < 4; i++) {
      await client.streams.append(stream, `more-${i}`);
    }
    const all = await client.streams.read(stream);
    assert.deepEqual(all.map((e) => e.payload.toString()), ["x", "more-0", "more-1", "more-2", "more-3"]);
    const page = await client.streams.read(stream, { after: all[1].id, limit: 2 });
    assert.deepEqual(page.map((e) => e.payload.toString()), ["more-1", "more-2"]);
    assert.ok(all[0].appendedAt instanceof Date);
    await client.streams.setRetention(stream, { maxAgeMs: 3_600_000 });
    assert.equal((await client.streams.info(stream)).retention.maxAgeMs, 3_600_000);
    assert.ok((await client.streams.trim(stream, { maxLen: 1 })) >= 0);
    await assert.rejects(
      client.streams.trim(stream, {}),
      (error: PatternsError) => error.code === status.INVALID_ARGUMENT,
    );
    const consumer = client.streams.consume({ stream, group: "doomed", consumer: "c" });
    await consumer.waitSubscribed({ timeoutMs: 10_000 });
    assert.equal(await client.streams.deleteGroup(stream, "doomed"), true);
    await assert.rejects(nextMessage(consumer), (error: PatternsError) => error.code === status.ABORTED);
    await consumer.close();
    assert.equal(await client.streams.deleteGroup(stream, "doomed"), false);
    assert.equal((await client.streams.info(name("none"))).exists, false);
  });

  it("starts a new group after an id, or at a time", async () => {
    const stream = name("start");
    const ids = [];
    for (let i = 0; i < 3; i++) {
      ids.push((await client.streams.append(stream, `e${i}`)).id);
      await new Promise((resolve) => setTimeout(resolve, 5)); // each entry its own millisecond
    }
    await using afterId = client.streams.consume({ stream, group: "by-id", consumer: "c", start: { afterId: ids[0] } });
    assert.equal((await nextMessage(afterId)).id, ids[1]);
    const [entry] = await client.streams.read(stream, { after: ids[1], limit: 1 });
    assert.ok(entry.appendedAt instanceof Date);
    await using atTime = client.streams.consume({ stream, group: "by-time", consumer: "c", start: { at: entry.appendedAt } });
    assert.equal((await nextMessage(atTime)).id, ids[2]);
  });

  it("ends an iteration in progress at close(), and nothing hangs", async () => {
    const consumer = client.streams.consume({ stream: name("quiet"), group: "g", consumer: "c" });
    await consumer.waitSubscribed({ timeoutMs: 10_000 });
    const waiting = consumer.next();
    const started = Date.now();
    await consumer.close();
    assert.deepEqual(await waiting, { value: undefined, done: true });
    assert.ok(Date.now() - started < 5_000);
  });
});

/**
 * A TCP proxy to PATTERNS_TARGET whose connections can be cut (as a server restart cuts
 * them) or held (as a paused server holds them: the sockets stay open, nothing passes).
 */
class Proxy {
  readonly #pairs = new Set<[Socket, Socket]>();
  readonly #server: Server;
  #holding = false;

  constructor(to: string) {
    const [host, port] = [to.slice(0, to.lastIndexOf(":")), Number(to.slice(to.lastIndexOf(":") + 1))];
    this.#server = createServer((inbound) => {
      const outbound = connect(port, host);
      const pair: [Socket, Socket] = [inbound, outbound];
      this.#pairs.add(pair);
      inbound.pipe(outbound).on("error", () => undefined);
      outbound.pipe(inbound).on("error", () => undefined);
      for (const socket of pair) {
        socket.on("error", () => undefined);
        socket.on("close", () => {
          pair.forEach((each) => each.destroy());
          this.#pairs.delete(pair);
        });
        if (this.#holding) {
          socket.pause();
        }
      }
    });
  }

  async listen(): Promise<string> {
    this.#server.listen(0, "127.0.0.1");
    await once(this.#server, "listening");
    return `127.0.0.1:${(this.#server.address() as { port: number }).port}`;
  }

  /** Close every connection through it; new ones are taken as before. */
  cut(): void {
    for (const pair of this.#pairs) {
      pair.forEach((socket) => socket.destroy());
    }
  }

  /** Pass nothing more, in either direction, until release(). */
  hold(): void {
    this.#holding = true;
    for (const pair of this.#pairs) {
      pair.forEach((socket) => socket.unpipe().pause());
    }
  }

  /** Pass everything again, what was held first. */
  release(): void {
    this.#holding = false;
    for (const [inbound, outbound] of this.#pairs) {
      inbound.pipe(outbound);
      outbound.pipe(inbound);
    }
  }

  close(): void {
    this.cut();
    this.#server.close();
  }
}

describe("interruptions, through a proxy to PATTERNS_TARGET", () => {
  let proxy: Proxy;
  let client: PatternsClient;
  before(async () => {
    proxy = new Proxy(target());
    client = new PatternsClient(await proxy.listen());
  });
  after(() => {
    client.close();
    proxy.close();
  });

  it("resubscribes after the connection is cut, yields a gap, then events again", async () => {
    const channel = name("cut");
    const subscription = client.events.subscribe({ channels: [channel] });
    await subscription.waitSubscribed({ timeoutMs: 10_000 });
    await client.events.publish(channel, "before");
    const first = await nextItem(subscription);
    assert.ok(first.type === "event" && first.payload.toString() === "before");
    proxy.cut();
    const gap = await nextItem(subscription, 30_000);
    assert.equal(gap.type, "gap");
    assert.ok(gap.type === "gap" && gap.error.code === status.UNAVAILABLE, gap.type === "gap" ? gap.error.message : "");
    assert.ok(subscription.subscribed);
    await client.events.publish(channel, "after");
    const second = await nextItem(subscription);
    assert.ok(second.type === "event" && second.payload.toString() === "after");
    await subscription.close();
  });

  it("opens a consumer again after the connection is cut, and the unacked entries come back", async () => {
    const stream = name("cut-stream");
    const consumer = client.streams.consume({ stream, group: "g", consumer: "c", ackTimeoutMs: 500 });
    await consumer.waitSubscribed({ timeoutMs: 10_000 });
    await client.streams.append(stream, "acked");
    await client.streams.append(stream, "unacked");
    const acked = await nextMessage(consumer);
    acked.ack();
    const unacked = await nextMessage(consumer);
    assert.equal(unacked.payload.toString(), "unacked");
    // The ack goes out before the cut (a cut ack would only mean one more delivery).
    assert.ok(await eventually(10_000, async () => (await client.streams.info(stream)).groups[0]?.pending === 1));
    proxy.cut();
    const again = await nextMessage(consumer, 30_000);
    assert.equal(again.id, unacked.id);
    assert.equal(again.deliveryCount, 2);
    again.ack();
    await client.streams.append(stream, "after");
    const after = await nextMessage(consumer);
    assert.equal(after.payload.toString(), "after");
    after.ack();
    await consumer.close();
  });

  it("falls back within the budget when an open connection goes silent", async () => {
    const policy = Policy.gcra(3, 60_000);
    assert.equal((await client.ratelimit.check(name("held"), policy, { onUnavailable: "allow" })).fallback, false);
    proxy.hold();
    let started = performance.now();
    const decision = await client.ratelimit.check(name("held"), policy, { onUnavailable: "allow" });
    assert.deepEqual([decision.allowed, decision.fallback], [true, true]);
    assert.ok(performance.now() - started < 2_000);
    started = performance.now();
    assert.equal((await client.cache.getOrCompute(name("held"), () => "v3")).toString(), "v3");
    assert.ok(performance.now() - started < 2_000);
  });
});

describe("fallbacks, against sockets that cannot answer", () => {
  let silent: Server;
  const sockets: Socket[] = [];
  let silentTarget = "";
  let closedTarget = "";

  before(async () => {
    // Accepts connections and never answers, as a paused server does.
    silent = createServer((socket) => sockets.push(socket)).listen(0, "127.0.0.1");
    await once(silent, "listening");
    silentTarget = `127.0.0.1:${(silent.address() as { port: number }).port}`;
    // A port nothing listens on.
    const closed = createServer().listen(0, "127.0.0.1");
    await once(closed, "listening");
    closedTarget = `127.0.0.1:${(closed.address() as { port: number }).port}`;
    closed.close();
  });
  after(() => {
    sockets.forEach((socket) => socket.destroy());
    silent.close();
  });

  for (const [kind, of, streamChecks] of [
    ["silent", () => silentTarget, true],
    ["closed", () => closedTarget, true],
    ["silent", () => silentTarget, false],
    ["closed", () => closedTarget, false],
  ] as const) {
    it(`fails open, or closed, within the budget (${kind} server, ${streamChecks ? "stream" : "unary"})`, async () => {
      const client = new PatternsClient(of(), { timeoutMs: 300, streamChecks });
      try {
        const policy = Policy.tokenBucket(10, 1_000, 20);
        let started = performance.now();
        const open = await client.ratelimit.check(name("fo"), policy, { onUnavailable: "allow", cost: 2 });
        assert.ok(performance.now() - started < 2_000);
        assert.deepEqual([open.allowed, open.fallback, open.limit, open.remaining], [true, true, 20, 18]);
        const shut = await client.ratelimit.check(name("fc"), policy, { onUnavailable: "deny", fallbackAfterMs: 100 });
        assert.deepEqual([shut.allowed, shut.fallback, shut.remaining], [false, true, 0]);
        assert.ok(shut.retryAfterMs > 0);
        await assert.rejects(client.ratelimit.check(name("r"), policy), (error: unknown) => {
          assert.ok(error instanceof PatternsError);
          assert.ok([status.DEADLINE_EXCEEDED, status.UNAVAILABLE].includes(error.code), error.codeName);
          return true;
        });
        started = performance.now();
        const value = await client.cache.getOrCompute(name("cf"), () => "v3");
        assert.equal(value.toString(), "v3");
        assert.ok(performance.now() - started < 2_000);
      } finally {
        client.close();
      }
    });
  }

  it("cancels the checks in progress on the stream at close()", async () => {
    const client = new PatternsClient(silentTarget, { timeoutMs: 30_000 });
    const pending = client.ratelimit.check(name("closing"), Policy.gcra(3, 60_000)).catch((error: unknown) => error);
    await new Promise((resolve) => setTimeout(resolve, 50)); // the stream waits for its connection
    client.close();
    const error = await pending;
    assert.ok(error instanceof PatternsError && error.code === status.CANCELLED, String(error));
  });

  it("cancels a check on the stream when its signal aborts, and only that check", async () => {
    const client = new PatternsClient(silentTarget, { timeoutMs: 30_000 });
    try {
      const policy = Policy.gcra(3, 60_000);
      const stop = new AbortController();
      const cancelled = client.ratelimit.check(name("aborted"), policy, { signal: stop.signal }).catch((e: unknown) => e);
      const other = client.ratelimit.check(name("other"), policy, { onUnavailable: "allow", fallbackAfterMs: 500 });
      stop.abort();
      const error = await cancelled;
      assert.ok(error instanceof PatternsError && error.code === status.CANCELLED, String(error));
      // The other check waited on, until its own budget ran out (a stream cancelled with it
      // would have rejected it CANCELLED, which no fallback covers).
      assert.equal((await other).fallback, true);
    } finally {
      client.close();
    }
  });

  it("gives up a hold whose first answer does not come", async () => {
    const client = new PatternsClient(silentTarget, { timeoutMs: 300 });
    try {
      await assert.rejects(client.locks.hold(name("h"), { ttlMs: 3_000 }), (error: unknown) => {
        assert.ok(error instanceof PatternsError && error.code === status.DEADLINE_EXCEEDED);
        return true;
      });
    } finally {
      client.close();
    }
  });

  it("keeps resubscribing while the server is down, until closed", async () => {
    const client = new PatternsClient(closedTarget);
    const subscription = client.events.subscribe({ channels: [name("nowhere")] });
    await assert.rejects(subscription.waitSubscribed({ timeoutMs: 300 }), (error: unknown) => {
      assert.ok(error instanceof PatternsError && error.code === status.DEADLINE_EXCEEDED);
      return true;
    });
    const pending = subscription.next();
    client.close(); // ends the subscription too
    assert.equal((await pending).done, true);
  });
});

/** Exact over any rolling hour, so no window rolls over while a test runs. */
const LIMIT = 10;
const HOUR_LOG = Policy.slidingWindowLog(LIMIT, 3_600_000);
const CONCURRENT = 64;

function exactlyTheLimit(decisions: Decision[]): void {
  assert.equal(decisions.length, CONCURRENT);
  assert.ok(!decisions.some((d) => d.fallback));
  assert.equal(decisions.filter((d) => d.allowed).length, LIMIT);
  assert.deepEqual(
    decisions
      .filter((d) => d.allowed)
      .map((d) => d.remaining)
      .sort((a, b) => a - b),
    [...Array(LIMIT).keys()],
  );
}

/** A period of 1 to 2 hours whose current window (aligned on epoch multiples of it, as the
 * server's are) is between a quarter and three quarters gone: no window boundary passes
 * while a test runs, at any time of day. */
function calmPeriodMs(): number {
  const now = Date.now();
  for (let period = 3_600_000; ; period += 60_000) {
    const gone = (now % period) / period;
    if (gone > 0.25 && gone < 0.75) {
      return period;
    }
  }
}

describe("checks over one CheckStream, against PATTERNS_TARGET and its metrics", () => {
  it("admits exactly the limit of 64 concurrent checks, over one stream and no unary Check", async () => {
    const key = name("burst");
    const { result, checks, streams } = await metered(() =>
      using({}, (client) => Promise.all(Array.from({ length: CONCURRENT }, () => client.ratelimit.check(key, HOUR_LOG)))),
    );
    exactlyTheLimit(result);
    assert.deepEqual({ checks, streams }, { checks: 0, streams: 1 });
  });

  it("sends unary Checks with streamChecks: false", async () => {
    const key = name("unary-burst");
    const { result, checks, streams } = await metered(() =>
      using({ streamChecks: false }, (client) =>
        Promise.all(Array.from({ length: CONCURRENT }, () => client.ratelimit.check(key, HOUR_LOG))),
      ),
    );
    exactlyTheLimit(result);
    assert.deepEqual({ checks, streams }, { checks: CONCURRENT, streams: 0 });
  });

  it("answers as unary Checks do, decisions and errors", async () => {
    const period = calmPeriodMs();
    const policies = [
      Policy.fixedWindow(3, period),
      Policy.slidingWindowLog(3, period),
      Policy.slidingWindowCounter(3, period),
      Policy.tokenBucket(3, period, 4),
      Policy.gcra(3, period, 4),
    ];
    const history: [number, boolean][] = [
      [1, false],
      [1, true],
      [2, false],
      [1, false],
      [1, false],
    ]; // [cost, peek]
    const bad: [string, Policy][] = [
      ["", HOUR_LOG], // an empty key
      ["k", Policy.fixedWindow(0, 3_600_000)], // a limit of 0
      ["k", Policy.gcra(3, 0)], // no period
    ];
    const answers = (streamChecks: boolean) =>
      using({ streamChecks }, async (client) => {
        const decisions = [];
        for (const [number, policy] of policies.entries()) {
          for (const [cost, peek] of history) {
            const d = await client.ratelimit.check(name(`same:${streamChecks}:${number}`), policy, { cost, peek });
            decisions.push([d.allowed, d.limit, d.remaining, d.retryAfterMs > 0, d.fallback]);
          }
        }
        const errors = [];
        for (const [key, policy] of bad) {
          // Not an error a fallback covers, whatever onUnavailable says.
          const options = { onUnavailable: "allow", fallbackAfterMs: 10_000 } as const;
          const error = await client.ratelimit.check(key, policy, options).catch((e: unknown) => e);
          assert.ok(error instanceof PatternsError, String(error));
          errors.push({
            code: error.code,
            reason: error.reason,
            details: error.details,
            message: error.message,
            fieldViolations: error.fieldViolations,
            retryAfterMs: error.retryAfterMs,
          });
        }
        return { decisions, errors };
      });
    const unary = await metered(() => answers(false));
    const stream = await metered(() => answers(true));
    assert.deepEqual(stream.result, unary.result);
    assert.deepEqual(
      stream.result.errors.map((error) => error.fieldViolations[0]?.field),
      ["key", "policy.limit", "policy.period"],
    );
    assert.deepEqual([stream.checks, stream.streams], [0, 1]);
    assert.deepEqual([unary.checks, unary.streams], [policies.length * history.length + bad.length, 0]);
  });

  it("sends the checks beyond the stream's 1,000 in progress as unary Checks", async () => {
    const key = name("many");
    // Sent in one go, before any answer is read: 1,000 on the stream, 100 unary.
    const { result, checks, streams } = await metered(() =>
      using({ timeoutMs: 30_000 }, (client) =>
        Promise.all(Array.from({ length: 1_100 }, () => client.ratelimit.check(key, HOUR_LOG))),
      ),
    );
    assert.equal(result.filter((d) => d.allowed).length, LIMIT);
    assert.ok(!result.some((d) => d.fallback));
    assert.deepEqual({ checks, streams }, { checks: 100, streams: 1 });
  });

  it("lets a program that never calls close() exit", async () => {
    // The stream, once idle, ends: an open call would keep Node's event loop alive.
    const index = new URL("../src/index.js", import.meta.url).href;
    const program = `
      import { PatternsClient, Policy } from ${JSON.stringify(index)};
      const client = new PatternsClient(${JSON.stringify(target())});
      const decision = await client.ratelimit.check(${JSON.stringify(name("exit"))}, Policy.gcra(3, 60_000));
      console.log(decision.allowed, decision.fallback);
    `;
    const { result, streams } = await metered(
      () =>
        new Promise<string>((resolve, reject) => {
          const child = execFile(process.execPath, ["--input-type=module", "-e", program], { timeout: 30_000 });
          let output = "";
          child.stdout?.on("data", (chunk) => (output += chunk));
          child.on("error", reject);
          child.on("exit", (code, signal) => resolve(`${output.trim()} exit ${code ?? signal}`));
        }),
    );
    assert.equal(result, "true false exit 0");
    assert.equal(streams, 1);
  });
});

describe("a CheckStream interrupted, through a proxy to PATTERNS_TARGET", () => {
  let proxy: Proxy;
  let address = "";
  before(async () => {
    proxy = new Proxy(target());
    address = await proxy.listen();
  });
  after(() => proxy.close());

  it("fails the checks in progress when the connection is cut, then opens a new stream", async () => {
    const policy = Policy.gcra(1_000, 60_000);
    // A timeout no check reaches here: the cut, not a deadline, must end them.
    const { checks, streams } = await metered(() =>
      using({ timeoutMs: 30_000 }, async (client) => {
        assert.equal((await client.ratelimit.check(name("cut"), policy)).fallback, false);
        proxy.hold();
        const raised = client.ratelimit.check(name("cut"), policy).catch((error: unknown) => error);
        const open = client.ratelimit.check(name("cut"), policy, { onUnavailable: "allow", fallbackAfterMs: 30_000 });
        proxy.cut();
        const error = await raised;
        assert.ok(error instanceof PatternsError && error.code === status.UNAVAILABLE, String(error));
        assert.deepEqual([(await open).allowed, (await open).fallback], [true, true]);
        proxy.release();
        // grpc-js reconnects with its backoff; the next checks open a new stream.
        const answered = await eventually(30_000, async () => {
          const decision = await client.ratelimit.check(name("cut"), policy, { onUnavailable: "allow" });
          return !decision.fallback;
        });
        assert.ok(answered, "no check answered after the cut");
      }, address),
    );
    assert.equal(checks, 0);
    assert.ok(streams >= 2, `${streams} streams`);
  });

  it("drops the answers of checks that gave up, and answers the next ones on the stream", async () => {
    const client = new PatternsClient(address, { timeoutMs: 30_000 });
    try {
      const fresh = Policy.fixedWindow(5, 3_600_000);
      assert.equal((await client.ratelimit.check(name("warm"), HOUR_LOG)).fallback, false);
      proxy.hold();
      const stale = await Promise.all(
        Array.from({ length: 5 }, (_, n) =>
          client.ratelimit.check(name(`stale:${n}`), HOUR_LOG, { onUnavailable: "deny", fallbackAfterMs: 300 }),
        ),
      );
      proxy.release(); // the late answers arrive now, and are dropped
      assert.ok(stale.every((d) => d.fallback && !d.allowed));
      const later = [];
      for (let n = 0; n < 20; n++) {
        later.push(await client.ratelimit.check(name(`fresh:${n}`), fresh));
      }
      // Each fresh key checked once: its own answer has 4 left; a stale answer would not.
      assert.deepEqual(
        later.map((d) => [d.allowed, d.remaining, d.fallback]),
        Array(20).fill([true, 4, false]),
      );
    } finally {
      client.close();
    }
  });
});
