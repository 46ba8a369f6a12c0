/**
 * `client.cache`: values with expiry and tags, and cache-aside done right (`getOrCompute`).
 *
 * `getOrCompute` asks the server for the value or, on a miss, for the lease to compute it:
 * one caller of the whole fleet computes a cold key while the others wait for its value. If
 * the cache cannot serve within the caller's `fallbackAfterMs` (the server or its Redis
 * unavailable, paused or overloaded, or no connection), the value is computed directly: a
 * cache outage is not an outage of what it speeds up. A holder whose compute() throws gives
 * its lease back (ReleaseLease), so the next caller computes at once.
 */
import type * as pb from "./gen/patterns/cache/v1/cache.js";
import { bytes, type CallOptions, type Calls, duration, FALLBACK_AFTER_MS, millis } from "./calls.js";
import { fallsBack } from "./errors.js";

/** A key's value and how long it has left. */
export interface Entry {
  value: Buffer;
  ttlRemainingMs: number;
}

/** The value getOrCompute stores for "not found" when asked to (`cacheMissesForMs`): a
 * reader of the key elsewhere (`get`, another language) sees these bytes. */
export const MISSING = Buffer.from("\x00patterns-client:not-found\x00", "latin1");

export const LEASE_TTL_MS = 10_000;
export const FILL_WAIT_MS = 5_000;

export interface GetOrComputeOptions {
  /** How long the computed value is kept (else the server's default). */
  ttlMs?: number;
  /** Tags stored with the value, for invalidateTags. */
  tags?: readonly string[];
  /** The most this caller holds the key's fill lease (default 10 s). */
  leaseTtlMs?: number;
  /** How long to wait for another caller's fill (default 5 s). */
  waitMs?: number;
  /** What the cache may cost, all its calls together, before compute() answers directly
   * (default 200 ms), plus `waitMs` once the server said another caller is filling. */
  fallbackAfterMs?: number;
  /** When compute() returns null ("not found"), keep that for this long (as MISSING). */
  cacheMissesForMs?: number;
}

/** What getOrCompute resolves to: bytes, and null too when compute() may return null. */
export type Computed<T> = null extends T ? Buffer | null : Buffer;

function entry(found: boolean, value: Uint8Array, ttlRemaining: pb.GetResponse["ttlRemaining"]): Entry | null {
  return found ? { value: Buffer.from(value), ttlRemainingMs: millis(ttlRemaining) } : null;
}

/** The time a recipe may spend on the server's calls before it falls back: spent only
 * while a call is in progress, not while the caller's compute() runs. */
class Budget {
  constructor(public leftMs: number) {}

  async spend<T>(call: (leftMs: number) => Promise<T>): Promise<T> {
    const started = performance.now();
    try {
      return await call(Math.max(this.leftMs, 0));
    } finally {
      this.leftMs -= performance.now() - started;
    }
  }
}

export class Cache {
  /** @internal */
  constructor(
    private readonly calls: Calls,
    private readonly stub: pb.CacheClient,
  ) {}

  /** The key's value, or null on a miss. */
  async get(key: string, options: CallOptions = {}): Promise<Entry | null> {
    const response = await this.calls.unary(this.stub.get.bind(this.stub), { key }, options);
    return entry(response.found, response.value, response.ttlRemaining);
  }

  /** The values of `keys`, in order (null for a miss). */
  async getMany(keys: readonly string[], options: CallOptions = {}): Promise<(Entry | null)[]> {
    const response = await this.calls.unary(this.stub.getMany.bind(this.stub), { keys: [...keys] }, options);
    return response.entries.map((e) => entry(e.found, e.value, e.ttlRemaining));
  }

  /** Store `value` (text as UTF-8) for `ttlMs`, until `expireAt`, or the server's default;
   * whether it was stored (not when `onlyIfAbsent` found a value). */
  async set(
    key: string,
    value: string | Uint8Array,
    options: CallOptions & { ttlMs?: number; expireAt?: Date; tags?: readonly string[]; onlyIfAbsent?: boolean } = {},
  ): Promise<boolean> {
    const request = {
      key,
      value: bytes(value),
      ttl: duration(options.ttlMs),
      expireAt: options.expireAt,
      tags: [...(options.tags ?? [])],
      onlyIfAbsent: options.onlyIfAbsent ?? false,
      leaseToken: "",
    };
    return (await this.calls.unary(this.stub.set.bind(this.stub), request, options)).stored;
  }

  /** Delete keys; how many held a value. */
  async delete(keys: string | readonly string[], options: CallOptions = {}): Promise<number> {
    const request = { keys: typeof keys === "string" ? [keys] : [...keys] };
    return (await this.calls.unary(this.stub.delete.bind(this.stub), request, options)).deleted;
  }

  /** Delete every entry that carries one of `tags` now; how many. */
  async invalidateTags(tags: readonly string[], options: CallOptions = {}): Promise<number> {
    return (await this.calls.unary(this.stub.invalidateTags.bind(this.stub), { tags: [...tags] }, options)).deleted;
  }

  /** Delete every entry whose key starts with `prefix`; how many. */
  async invalidatePrefix(prefix: string, options: CallOptions = {}): Promise<number> {
    return (await this.calls.unary(this.stub.invalidatePrefix.bind(this.stub), { prefix }, options)).deleted;
  }

  /**
   * The value of `key`; on a miss, compute()'s, stored for `ttlMs` under `tags`.
   *
   * Across the fleet one caller computes a cold key (it holds the key's fill lease for
   * `leaseTtlMs` at most) while the others wait up to `waitMs` for its value, then compute
   * it themselves, without storing. If compute() throws, the lease is given back (the next
   * caller computes at once) and its error rethrown.
   *
   * The cache costs `fallbackAfterMs` (200 ms) at most, all its calls together, plus
   * `waitMs` when another caller is filling the key: when it cannot answer within that,
   * compute() is called directly.
   *
   * compute() may return null for "not found": then null is returned, and with
   * `cacheMissesForMs` the miss is cached for that long (as MISSING, under `tags`).
   */
  async getOrCompute<T extends string | Uint8Array | null>(
    key: string,
    compute: () => T | Promise<T>,
    options: GetOrComputeOptions = {},
  ): Promise<Computed<T>> {
    const budget = new Budget(options.fallbackAfterMs ?? FALLBACK_AFTER_MS);
    const waitMs = options.waitMs ?? FILL_WAIT_MS;
    const leaseTtl = duration(options.leaseTtlMs ?? LEASE_TTL_MS);
    const misses = options.cacheMissesForMs;
    const direct = async () => {
      const value = await compute();
      return (value === null ? null : bytes(value)) as Computed<T>;
    };
    const getOrLease = this.stub.getOrLease.bind(this.stub);
    let response: pb.GetOrLeaseResponse;
    try {
      // No wait here: a paused server costs the budget only.
      response = await budget.spend((left) =>
        this.calls.unary(getOrLease, { key, leaseTtl, waitTimeout: undefined }, { timeoutMs: left }),
      );
      if (response.pending !== undefined && waitMs > 0) {
        budget.leftMs += waitMs; // the server said another caller fills: worth the wait
        response = await budget.spend((left) =>
          this.calls.unary(getOrLease, { key, leaseTtl, waitTimeout: duration(waitMs) }, { timeoutMs: left }),
        );
      }
    } catch (error) {
      if (!fallsBack(error)) {
        throw error;
      }
      return await direct(); // the cache is unavailable: the source answers
    }
    if (response.hit !== undefined) {
      const value = Buffer.from(response.hit.value);
      return (misses !== undefined && value.equals(MISSING) ? null : value) as Computed<T>;
    }
    if (response.lease === undefined) {
      return await direct(); // another caller still fills: ours is not stored
    }
    const token = response.lease.token;
    let computed: T;
    try {
      computed = await compute();
    } catch (error) {
      await this.#giveBack(key, token, budget);
      throw error;
    }
    if (computed === null && misses === undefined) {
      await this.#giveBack(key, token, budget); // nothing to store: the next one computes
      return null as Computed<T>;
    }
    const stored = computed === null ? MISSING : bytes(computed);
    const request = {
      key,
      value: stored,
      ttl: duration(computed === null ? misses : options.ttlMs),
      expireAt: undefined,
      tags: [...(options.tags ?? [])],
      onlyIfAbsent: false,
      leaseToken: token,
    };
    try {
      await budget.spend((left) => this.calls.unary(this.stub.set.bind(this.stub), request, { timeoutMs: left }));
    } catch (error) {
      if (!fallsBack(error)) {
        await this.#giveBack(key, token, budget);
        throw error;
      }
      // The cache is unavailable: the value is not stored, and the caller has it anyway.
    }
    return (computed === null ? null : stored) as Computed<T>;
  }

  /** Release the fill lease `token` of `key`, so that a waiter takes the next one at once;
   * if the cache cannot, the lease ends after its leaseTtl. */
  async #giveBack(key: string, token: string, budget: Budget): Promise<void> {
    try {
      await budget.spend((left) =>
        this.calls.unary(this.stub.releaseLease.bind(this.stub), { key, leaseToken: token }, { timeoutMs: left }),
      );
    } catch {
      // The lease ends after its leaseTtl instead.
    }
  }
}
