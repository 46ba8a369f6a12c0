/**
 * `client.locks`: leases with fencing tokens, and a lock held for a block of work.
 *
 * `hold` keeps a Hold stream open while the lock is held: the server renews the lease while
 * the stream lasts and releases it when the stream ends, whether the block ends, throws, or
 * the process dies. If the server reports the lease lost (force-released, or Redis
 * unreachable past the ttl), `held.signal` aborts: pass it to the work, and pass
 * `fencingToken` to what the work writes.
 */
import { type ClientReadableStream, status } from "@grpc/grpc-js";
import * as pb from "./gen/patterns/lock/v1/lock.js";
import { type CallOptions, type Calls, duration, millis } from "./calls.js";
import { LockNotAcquiredError, PatternsError, toPatternsError } from "./errors.js";

/** A granted lease: `token` proves it (keep it secret); `fencingToken` is greater than every
 * earlier grant's of the name (compare tokens: they have gaps). */
export interface Lease {
  name: string;
  token: string;
  fencingToken: number;
  expiresAt: Date | undefined;
}

/** What a release found: released, nobody holding the lock, or someone else. */
export type ReleaseStatus = "RELEASED" | "NOT_HELD" | "HELD_BY_OTHER";

/** What Inspect says of a lock (never its token). */
export interface LockState {
  held: boolean;
  fencingToken: number;
  ttlRemainingMs: number;
}

export interface HoldOptions {
  /** The lease's length; the server renews it every ttl/3 while held. */
  ttlMs: number;
  /** How long to wait for the lock when another holds it (default: not at all). */
  waitMs?: number;
  /** How long the first answer may take beyond `waitMs` (default: the client's timeout). */
  timeoutMs?: number;
  /** Aborting it gives up waiting, or releases the lock. */
  signal?: AbortSignal;
}

/**
 * A lock held by `locks.hold` until `release()` (or the end of its `await using` block).
 * `signal` aborts when the lease is lost before that, its `reason` (and `error`) saying why.
 */
export class HeldLock implements AsyncDisposable {
  readonly #call: ClientReadableStream<pb.HoldResponse>;
  readonly #lost = new AbortController();
  readonly #ended: Promise<void>;
  #releasing = false;
  #error: PatternsError | undefined;

  /** @internal */
  constructor(
    readonly name: string,
    readonly token: string,
    readonly fencingToken: number,
    call: ClientReadableStream<pb.HoldResponse>,
    private readonly onEnd: () => void,
    earlyError: () => unknown,
  ) {
    this.#call = call;
    // Only `lost` can follow `acquired`; the error that ends the stream says why. Anything
    // but this side's own cancellation means the lease is gone.
    this.#ended = new Promise<void>((resolve) => {
      call.on("data", (message: pb.HoldResponse) => {
        if (message.lost !== undefined) {
          this.#lose(new PatternsError(status.ABORTED, "the lease was lost", { reason: "LEASE_LOST" }));
        }
      });
      call.on("error", (error) => {
        if (!(this.#releasing && (error as { code?: number }).code === status.CANCELLED)) {
          this.#lose(toPatternsError(error) as PatternsError);
        }
      });
      call.on("end", () => this.#lose(new PatternsError(status.ABORTED, "the server ended the hold", { reason: "LEASE_LOST" })));
      call.on("close", () => resolve());
      // What happened between the first answer and now (a turn of the event loop at most).
      if (earlyError() !== undefined) {
        this.#lose(toPatternsError(earlyError()) as PatternsError);
      }
      if (call.closed) {
        resolve();
      }
      call.resume();
    });
  }

  /** Aborted when the lease is lost while held (never by release()). */
  get signal(): AbortSignal {
    return this.#lost.signal;
  }

  /** Whether the lease was lost while held. */
  get lost(): boolean {
    return this.#lost.signal.aborted;
  }

  /** Why the lease was lost, when it was. */
  get error(): PatternsError | undefined {
    return this.#error;
  }

  #lose(error: PatternsError): void {
    if (this.#releasing || this.#lost.signal.aborted) {
      return;
    }
    this.#error = error;
    this.#lost.abort(error);
  }

  /** Give the lock up: the stream ends and the server releases it. Never throws (a lock
   * already lost has nothing to give up); calling it again does nothing. */
  async release(): Promise<void> {
    if (!this.#releasing) {
      this.#releasing = true;
      this.#call.cancel();
      this.onEnd();
    }
    await this.#ended;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.release();
  }
}

function lease(name: string, response: pb.AcquireResponse): Lease | null {
  return response.acquired
    ? { name, token: response.token, fencingToken: response.fencingToken, expiresAt: response.expiresAt }
    : null;
}

export class Locks {
  /** @internal */
  constructor(
    private readonly calls: Calls,
    private readonly stub: pb.LockerClient,
  ) {}

  /** The lock for `ttlMs`, waiting up to `waitMs` for it; null when not granted. */
  async acquire(name: string, options: CallOptions & { ttlMs: number; waitMs?: number }): Promise<Lease | null> {
    const request = { name, ttl: duration(options.ttlMs), waitTimeout: duration(options.waitMs) };
    return lease(name, await this.calls.unary(this.stub.acquire.bind(this.stub), request, options, options.waitMs ?? 0));
  }

  /** Give the lock up, if the lease still holds it. */
  async release(lease: Lease, options: CallOptions = {}): Promise<ReleaseStatus> {
    const request = { name: lease.name, token: lease.token };
    const response = await this.calls.unary(this.stub.release.bind(this.stub), request, options);
    return pb.releaseStatusToJSON(response.status).replace("RELEASE_STATUS_", "") as ReleaseStatus;
  }

  /** The lease with `ttlMs` left from now; null when it no longer holds the lock. */
  async extend(lease: Lease, options: CallOptions & { ttlMs: number }): Promise<Lease | null> {
    const request = { name: lease.name, token: lease.token, ttl: duration(options.ttlMs) };
    const response = await this.calls.unary(this.stub.extend.bind(this.stub), request, options);
    return response.extended ? { ...lease, expiresAt: response.expiresAt } : null;
  }

  /** Whether the lock is held, its fencing token and time left (never its token). */
  async inspect(name: string, options: CallOptions = {}): Promise<LockState> {
    const response = await this.calls.unary(this.stub.inspect.bind(this.stub), { name }, options);
    return { held: response.held, fencingToken: response.fencingToken, ttlRemainingMs: millis(response.ttlRemaining) };
  }

  /** End whoever's lease on the name (an operator's tool); whether there was one. */
  async forceRelease(name: string, options: CallOptions = {}): Promise<boolean> {
    return (await this.calls.unary(this.stub.forceRelease.bind(this.stub), { name }, options)).released;
  }

  /**
   * Hold the lock until `release()`: `await using held = await client.locks.hold(name, {
   * ttlMs })`, or try/finally. Waits up to `waitMs` for it, else rejects with
   * LockNotAcquiredError; DEADLINE_EXCEEDED when the server gives no first answer within
   * the client's timeout (plus `waitMs`). The server renews it every ttl/3.
   */
  async hold(name: string, options: HoldOptions): Promise<HeldLock> {
    const request = { name, ttl: duration(options.ttlMs), waitTimeout: duration(options.waitMs) };
    const call = this.calls.stream(this.stub.hold.bind(this.stub), request);
    // An error with no listener would crash the process: keep one from the start, which
    // also keeps what failed before the HeldLock listens.
    let failure: unknown;
    call.on("error", (error) => (failure ??= error));
    const closable = { close: () => call.cancel() };
    this.calls.open.add(closable);
    // The stream has no deadline (it lasts as long as the hold), but its first answer does.
    const patienceMs = (options.timeoutMs ?? this.calls.timeoutMs) + (options.waitMs ?? 0);
    let first: pb.HoldResponse;
    try {
      first = await firstAnswer(call, patienceMs, options.signal);
    } catch (error) {
      call.cancel();
      this.calls.open.delete(closable);
      throw error;
    }
    if (first.acquired === undefined) {
      call.cancel();
      this.calls.open.delete(closable);
      throw new LockNotAcquiredError(name);
    }
    const held = new HeldLock(name, first.acquired.token, first.acquired.fencingToken, call, () =>
      this.calls.open.delete(closable),
      () => failure,
    );
    options.signal?.addEventListener("abort", () => void held.release(), { once: true });
    return held;
  }
}

/** The first message of `call`, within `patienceMs`; rejects as the stream fails. */
function firstAnswer(
  call: ClientReadableStream<pb.HoldResponse>,
  patienceMs: number,
  signal: AbortSignal | undefined,
): Promise<pb.HoldResponse> {
  return new Promise((resolve, reject) => {
    const settle = (done: () => void) => {
      clearTimeout(timer);
      call.off("data", onData);
      call.off("error", onError);
      call.off("end", onEnd);
      signal?.removeEventListener("abort", onAbort);
      done();
    };
    const onData = (message: pb.HoldResponse) => {
      call.pause(); // what follows is the HeldLock's to read
      settle(() => resolve(message));
    };
    const onError = (error: Error) => settle(() => reject(toPatternsError(error)));
    const onEnd = () => settle(() => reject(new PatternsError(status.INTERNAL, "the Hold stream ended without an answer")));
    const onAbort = () => settle(() => reject(signal?.reason));
    const timer = setTimeout(
      () => settle(() => reject(new PatternsError(status.DEADLINE_EXCEEDED, `Hold gave no first answer within ${patienceMs} ms`))),
      patienceMs,
    );
    call.on("data", onData);
    call.on("error", onError);
    call.on("end", onEnd);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
