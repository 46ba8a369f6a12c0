/** `client.ratelimit`: checks under a policy, and a check that fails open (or closed). */
import * as pb from "./gen/patterns/ratelimit/v1/ratelimit.js";
import { type CallOptions, type Calls, duration, FALLBACK_AFTER_MS, millis } from "./calls.js";
import type { CheckStream } from "./checkstream.js";
import { fallsBack, type PatternsError } from "./errors.js";

/** The algorithms of a policy (see docs/ratelimit.md). */
export type Algorithm = "FIXED_WINDOW" | "SLIDING_WINDOW_LOG" | "SLIDING_WINDOW_COUNTER" | "TOKEN_BUCKET" | "GCRA";

/** `limit` units per `periodMs`, counted by `algorithm`; `burst` (buckets only) is the most
 * admitted at once after a quiet spell (0 or absent: `limit`). */
export interface Policy {
  algorithm: Algorithm;
  limit: number;
  periodMs: number;
  burst?: number;
}

/** Policies by algorithm: `Policy.gcra(100, 60_000)` is 100 per minute. */
export const Policy = {
  /** Windows aligned on the clock; cheapest; up to 2x `limit` around a boundary. */
  fixedWindow: (limit: number, periodMs: number): Policy => ({ algorithm: "FIXED_WINDOW", limit, periodMs }),
  /** Exact: at most `limit` in any `periodMs` (limit at most 100,000). */
  slidingWindowLog: (limit: number, periodMs: number): Policy => ({ algorithm: "SLIDING_WINDOW_LOG", limit, periodMs }),
  /** An approximate rolling window in constant memory. */
  slidingWindowCounter: (limit: number, periodMs: number): Policy => ({ algorithm: "SLIDING_WINDOW_COUNTER", limit, periodMs }),
  /** A bucket of `burst` tokens refilled at `limit` per `periodMs`. */
  tokenBucket: (limit: number, periodMs: number, burst = 0): Policy => ({ algorithm: "TOKEN_BUCKET", limit, periodMs, burst }),
  /** The token bucket's decisions, stored as one timestamp per key. */
  gcra: (limit: number, periodMs: number, burst = 0): Policy => ({ algorithm: "GCRA", limit, periodMs, burst }),
};

/**
 * A check's answer. `limit` is the policy's capacity, `remaining` what is left of it,
 * `resetAfterMs` the time until it is whole again, `retryAfterMs` (0 when allowed) the wait
 * until the same cost would be admitted. `fallback` is true when the decision is the
 * client's `onUnavailable` choice, the server having no answer within `fallbackAfterMs`:
 * then `limit` is the policy's capacity (`burst`, else `limit`) and `remaining` capacity -
 * cost when admitted, 0 when refused.
 */
export interface Decision {
  allowed: boolean;
  limit: number;
  remaining: number;
  resetAfterMs: number;
  retryAfterMs: number;
  fallback: boolean;
  policy: Policy;
}

/** What a check answers when the server cannot: "raise" (reject), "allow" (fail open) or
 * "deny" (fail closed). */
export type OnUnavailable = "raise" | "allow" | "deny";

export interface CheckOptions extends CallOptions {
  /** Units to consume (default 1). */
  cost?: number;
  /** Answer without consuming. */
  peek?: boolean;
  /** Default "raise": a failure rejects, after the client's timeout at most. */
  onUnavailable?: OnUnavailable;
  /** With "allow" or "deny", how long the server may take (default 200 ms). */
  fallbackAfterMs?: number;
}

function policyMessage(policy: Policy): pb.Policy {
  return {
    algorithm: pb.Algorithm[policy.algorithm],
    limit: policy.limit,
    period: duration(policy.periodMs),
    burst: policy.burst ?? 0,
  };
}

function decision(response: pb.CheckResponse, policy: Policy): Decision {
  return {
    allowed: response.allowed,
    limit: response.limit,
    remaining: response.remaining,
    resetAfterMs: millis(response.resetAfter),
    retryAfterMs: millis(response.retryAfter),
    fallback: false,
    policy,
  };
}

/** The decision `onUnavailable` makes when the check failed with `error`; `error` itself
 * rethrown when no fallback covers it (fallsBack) or the caller chose "raise". */
function fallback(policy: Policy, cost: number, error: unknown, onUnavailable: OnUnavailable): Decision {
  if (onUnavailable === "raise" || !fallsBack(error)) {
    throw error;
  }
  const allowed = onUnavailable === "allow";
  const capacity = policy.burst || policy.limit;
  const wait = allowed ? 0 : ((error as PatternsError).retryAfterMs ?? 1_000);
  return {
    allowed,
    limit: capacity,
    remaining: allowed ? Math.max(capacity - cost, 0) : 0,
    resetAfterMs: wait,
    retryAfterMs: wait,
    fallback: true,
    policy,
  };
}

export class RateLimiter {
  /** @internal With `checkStream` (the client's `streamChecks`, on by default), `check`
   * sends its checks over that one shared CheckStream rather than a unary Check each: the
   * same answers, for less of the server's time. */
  constructor(
    private readonly calls: Calls,
    private readonly stub: pb.RateLimiterClient,
    private readonly checkStream?: CheckStream,
  ) {}

  /** `request`'s answer within `timeoutMs`, over the stream or unary. A check with
   * metadata of its own goes unary: the stream's metadata is the client's. */
  #decide(request: pb.CheckRequest, timeoutMs: number, options: CallOptions): Promise<pb.CheckResponse> {
    if (this.checkStream !== undefined && options.metadata === undefined) {
      return this.checkStream.check(request, timeoutMs, options.signal);
    }
    return this.calls.unary(this.stub.check.bind(this.stub), request, { ...options, timeoutMs });
  }

  /**
   * Whether `cost` units for `key` are admitted under `policy` (consumed if so).
   *
   * With `onUnavailable: "allow"` or `"deny"` the check waits `fallbackAfterMs` (200 ms)
   * at most; when the server has not answered by then, or answered that it or its Redis is
   * unavailable or that it is overloaded (fallsBack), the decision is the client's own
   * (`fallback: true`): admitted, or refused for the error's retry-after (else 1 s). Other
   * errors (a wrong argument or API key) reject whatever `onUnavailable` says.
   */
  async check(key: string, policy: Policy, options: CheckOptions = {}): Promise<Decision> {
    const cost = options.cost ?? 1;
    const request: pb.CheckRequest = { key, policy: policyMessage(policy), cost, peek: options.peek ?? false };
    const onUnavailable = options.onUnavailable ?? "raise";
    if (onUnavailable === "raise") {
      return decision(await this.#decide(request, options.timeoutMs ?? this.calls.timeoutMs, options), policy);
    }
    try {
      return decision(await this.#decide(request, options.fallbackAfterMs ?? FALLBACK_AFTER_MS, options), policy);
    } catch (error) {
      return fallback(policy, cost, error, onUnavailable);
    }
  }

  /** Several [key, policy] checks of cost 1 at once: whether all were admitted, and each
   * decision in order. With `allOrNothing` nothing is consumed unless all are. */
  async checkMany(
    checks: readonly (readonly [string, Policy])[],
    options: CallOptions & { allOrNothing?: boolean } = {},
  ): Promise<{ allowed: boolean; decisions: Decision[] }> {
    const request: pb.CheckManyRequest = {
      checks: checks.map(([key, policy]) => ({ key, policy: policyMessage(policy), cost: 1, peek: false })),
      allOrNothing: options.allOrNothing ?? false,
    };
    const response = await this.calls.unary(this.stub.checkMany.bind(this.stub), request, options);
    return { allowed: response.allowed, decisions: response.results.map((result, i) => decision(result, checks[i][1])) };
  }

  /** Forget what `key` has consumed under `policy`. */
  async reset(key: string, policy: Policy, options: CallOptions = {}): Promise<void> {
    await this.calls.unary(this.stub.reset.bind(this.stub), { key, policy: policyMessage(policy) }, options);
  }
}
