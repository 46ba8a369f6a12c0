/**
 * Uses every service and recipe of @patterns-server/client against a live server, printing
 * one line per step on stdout (what CLIENT-SPEC.md's driver checks; nothing else goes to
 * stdout). A line starting with "? " asks the driver to act (restart, pause, resume the
 * server): the program then reads one line from stdin before going on.
 *
 * The connection comes from PATTERNS_TARGET, PATTERNS_API_KEY, PATTERNS_CA_FILE,
 * PATTERNS_CERT_FILE and PATTERNS_KEY_FILE (PatternsClient.fromEnv).
 */
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { PatternsClient, PatternsError, Policy, type SubscriptionItem } from "@patterns-server/client";

const input = createInterface({ input: process.stdin });
const answers = input[Symbol.asyncIterator]();

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** Print a request to the driver, and wait for its answer (one line). */
async function ask(request: string): Promise<void> {
  say(`? ${request}`);
  await answers.next();
}

/** `promise`, or a rejection after `ms` saying what did not come. */
async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Whether `check()` comes true within `ms`, asking every 50 ms. */
async function eventually(ms: number, check: () => Promise<boolean>): Promise<boolean> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) {
      return false;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return true;
}

const describe = (item: SubscriptionItem): string => (item.type === "gap" ? "gap" : item.payload.toString());

async function main(): Promise<void> {
  const client = PatternsClient.fromEnv();
  const run = randomBytes(6).toString("hex"); // in every name: runs never collide

  // Rate limit: GCRA 3 per minute, four checks; the refusal says when to retry.
  const policy = Policy.gcra(3, 60_000);
  const decisions = [];
  for (let i = 0; i < 4; i++) {
    decisions.push(await client.ratelimit.check(`user:${run}`, policy));
  }
  const allowed = decisions.map((d) => d.allowed).join(" ");
  say(`ratelimit: ${allowed} retry_after>0 ${decisions[3].retryAfterMs > 0}`);

  // A refused argument, read through PatternsError.
  try {
    await client.ratelimit.check("", policy);
    throw new Error("an empty key was accepted");
  } catch (error) {
    if (!(error instanceof PatternsError)) throw error;
    say(`error: ${error.codeName} ${error.fieldViolations[0]?.field} ${error.reason}`);
  }

  await client.counter.add(`visitors:${run}`, ["a", "b", "a"]);
  say(`counter: ${await client.counter.count(`visitors:${run}`)}`);

  const board = `chess:${run}`;
  await client.leaderboard.submit(board, "ann", 10);
  await client.leaderboard.submit(board, "bob", 5);
  const { entries } = await client.leaderboard.top(board);
  say(`leaderboard: ${entries[0].member} ${entries[0].rank} ${await client.leaderboard.size(board)}`);

  const session = await client.sessions.create(`u:${run}`, { attributes: { agent: "ts" }, ttlMs: 60_000 });
  const found = (await client.sessions.get(session.id)) !== null;
  await client.sessions.destroy(session.id);
  say(`sessions: ${found} ${(await client.sessions.get(session.id)) !== null}`);

  // Cache-aside with the fill lease: computed once, then a hit.
  let computed = 0;
  const v1 = async () => {
    computed += 1;
    return "v1";
  };
  await client.cache.getOrCompute(`page:${run}`, v1, { ttlMs: 60_000 });
  const page = await client.cache.getOrCompute(`page:${run}`, v1, { ttlMs: 60_000 });
  say(`cache: ${page.toString()} computed ${computed}`);

  // A compute that fails gives the lease back: the next caller computes at once, without
  // waiting for the lease to end.
  const failure = new Error("the source failed");
  let same = false;
  try {
    await client.cache.getOrCompute(`report:${run}`, () => Promise.reject(failure));
  } catch (error) {
    same = error === failure;
  }
  const started = Date.now();
  await client.cache.getOrCompute(`report:${run}`, () => "v2", { waitMs: 20_000 });
  say(`cache failed compute: ${same} ${Date.now() - started < 10_000}`);

  // A lock held for a block: renewed by the server, released when the block ends.
  let ran = false;
  let fenced = false;
  {
    await using held = await client.locks.hold(`job:${run}`, { ttlMs: 3_000 });
    ran = !held.signal.aborted;
    fenced = held.fencingToken > 0;
  }
  const free = await eventually(5_000, async () => !(await client.locks.inspect(`job:${run}`)).held);
  say(`lock: ${ran} ${fenced} free ${free}`);

  // A lock taken away mid-hold: the signal aborts.
  let lost = false;
  {
    await using held = await client.locks.hold(`lost:${run}`, { ttlMs: 3_000 });
    await client.locks.forceRelease(`lost:${run}`);
    lost = await within(15_000, "loss", once(held.signal, "abort")).then(
      () => true,
      () => false,
    );
  }
  say(`lock lost: ${lost}`);

  // A subscription that lives through a restart of the server: a gap, then events again.
  const subscription = client.events.subscribe({ channels: [`orders:${run}`] });
  await subscription.waitSubscribed({ timeoutMs: 10_000 });
  await client.events.publish(`orders:${run}`, "1");
  say(`events: ${describe((await within(10_000, "event 1", subscription.next())).value)}`);
  await ask("restart");
  const gap = (await within(60_000, "the gap", subscription.next())).value;
  await client.events.publish(`orders:${run}`, "2");
  const second = (await within(10_000, "event 2", subscription.next())).value;
  say(`events after restart: ${describe(gap)} ${describe(second)}`);

  // A paused server: the recipes fall back within their 200 ms budget.
  await ask("pause");
  let t0 = performance.now();
  const open = await client.ratelimit.check(`fail-open:${run}`, policy, { onUnavailable: "allow" });
  const checkMs = Math.round(performance.now() - t0);
  say(`fail-open: ${open.allowed} ${open.fallback}`);
  t0 = performance.now();
  const direct = await client.cache.getOrCompute(`fallback:${run}`, () => "v3");
  const cacheMs = Math.round(performance.now() - t0);
  say(`cache fallback: ${direct.toString()}`);
  say(`fallbacks took ${checkMs} ${cacheMs}`);
  await ask("resume");

  await subscription.close();
  client.close();
  input.close();
  say("done");
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
