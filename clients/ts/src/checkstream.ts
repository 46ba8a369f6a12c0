/**
 * Rate-limit checks sent over one shared RateLimiter.CheckStream (the Python client's
 * `_check_stream`, on Node's one thread).
 *
 * Every concurrent check of a client is one message on the client's one stream, matched to
 * its answer by id, so the server decides the checks that arrive together in one Redis
 * round trip instead of serving a unary Check each.
 *
 * What a check answers is exactly what a unary Check would have: its decision, the same
 * PatternsError for its error (a CheckError carries the unary status, flattened),
 * DEADLINE_EXCEEDED when no answer came within its timeout (a late answer is dropped), and
 * the stream's own status for the checks in progress when the stream ends (UNAVAILABLE when
 * the connection broke). The next check then opens a new stream, lazily: never in a loop of
 * its own (grpc-js paces reconnections with its backoff). A stream refused before it
 * answered anything (an older server: UNIMPLEMENTED; the server's or the tenant's share of
 * streams: RESOURCE_EXHAUSTED) decided nothing, so its checks are sent as unary Checks
 * instead, and so are the next ones (for good after UNIMPLEMENTED, for the refusal's
 * retry-after else).
 *
 * Unlike Python's daemon threads, an open call keeps Node's event loop alive: a stream with
 * no check in progress for IDLE_END_MS is ended, so a program that never calls close()
 * still exits.
 */
import { type ClientDuplexStream, status } from "@grpc/grpc-js";
import type * as pb from "./gen/patterns/ratelimit/v1/ratelimit.js";
import { type Calls, type Closable, millis } from "./calls.js";
import { PatternsError, toPatternsError } from "./errors.js";

/** The contract's limit of checks in progress on one stream; a check beyond it goes unary
 * (the server would refuse it OVERLOADED). The messages not yet written (a paused server
 * stops reading) are held to it too. */
export const MAX_IN_PROGRESS = 1_000;
/** How long checks go unary after the stream was refused for want of a stream slot, when
 * the refusal names no retry-after. */
export const REFUSED_FOR_MS = 1_000;
/** How long a stream stays open with no check in progress. */
export const IDLE_END_MS = 1_000;

/** The stream was refused before it answered anything: its checks were not decided. */
class StreamRefused {
  constructor(readonly error: PatternsError) {}
}

/** How a check in progress hears of its outcome. */
interface Waiter {
  answer(response: pb.CheckResponse): void;
  fail(error: PatternsError | StreamRefused): void;
}

// The statuses of a stream refused before it decided anything.
const REFUSALS = new Set<number>([status.UNIMPLEMENTED, status.RESOURCE_EXHAUSTED]);

/** The PatternsError a unary Check would have rejected with, from a check's CheckError. */
export function checkError(error: pb.CheckError): PatternsError {
  const fieldViolations = [];
  if (error.field) {
    // The server's message is "<field>: <description>"; BadRequest carries the description
    // alone, and so does the unary failure's violation.
    const prefix = `${error.field}: `;
    const description = error.message.startsWith(prefix) ? error.message.slice(prefix.length) : error.message;
    fieldViolations.push({ field: error.field, description });
  }
  return new PatternsError(error.code, error.message, {
    reason: error.reason,
    fieldViolations,
    retryAfterMs: error.retryAfter === undefined ? undefined : millis(error.retryAfter),
  });
}

/** What a check not answered within its timeout rejects with: as a unary call's deadline. */
function deadlineExceeded(): PatternsError {
  return new PatternsError(status.DEADLINE_EXCEEDED, "Deadline exceeded");
}

/** One CheckStream call and the checks waiting for its answers. */
class Stream implements Closable {
  /** Takes no more checks: ended, or ending. */
  ended = false;
  readonly #call: ClientDuplexStream<pb.CheckStreamRequest, pb.CheckStreamResponse>;
  readonly #waiting = new Map<number, Waiter>();
  #answered = false;
  #failure: unknown;
  #lastSent = performance.now();
  #idle: NodeJS.Timeout | undefined;

  constructor(
    stub: pb.RateLimiterClient,
    private readonly calls: Calls,
    private readonly onRefused: (error: PatternsError) => void,
  ) {
    // No deadline: the stream lasts while checks come; each check has its own.
    this.#call = stub.checkStream(calls.meta(), {});
    calls.open.add(this);
    this.#call.on("data", (response: pb.CheckStreamResponse) => this.#answer(response));
    // grpc-js emits the failure before the answers still buffered are read, and "end" after
    // them: the stream is over at "end", with that failure.
    this.#call.on("error", (error) => {
      this.#failure ??= error;
      this.ended = true; // the call is over: the next check opens another
    });
    this.#call.on("end", () => this.#end());
  }

  /** Send `request` as check `id`; false when the stream takes no more checks (ended, or
   * MAX_IN_PROGRESS in progress or unwritten). */
  send(id: number, request: pb.CheckRequest, waiter: Waiter): boolean {
    if (this.ended || this.full()) {
      return false;
    }
    this.#waiting.set(id, waiter);
    this.#lastSent = performance.now();
    this.#call.write({ id, check: request });
    return true;
  }

  full(): boolean {
    return Math.max(this.#waiting.size, this.#call.writableLength) >= MAX_IN_PROGRESS;
  }

  /** Stop waiting for check `id` (it gave up): its answer, if one comes, is dropped. */
  forget(id: number): void {
    if (this.#waiting.delete(id)) {
      this.#whenIdle();
    }
  }

  /** Cancel the call (the client's close()): the checks in progress fail CANCELLED, as a
   * unary call's would. */
  close(): void {
    this.ended = true;
    this.#call.cancel();
  }

  #answer(response: pb.CheckStreamResponse): void {
    this.#answered = true;
    const waiter = this.#waiting.get(response.id);
    if (waiter === undefined) {
      return; // a check that gave up: nobody reads its answer
    }
    this.#waiting.delete(response.id);
    if (response.result !== undefined) {
      waiter.answer(response.result);
    } else if (response.error !== undefined) {
      waiter.fail(checkError(response.error));
    } else {
      waiter.fail(new PatternsError(status.INTERNAL, "the check stream answered neither a decision nor an error"));
    }
    this.#whenIdle();
  }

  #end(): void {
    this.ended = true;
    clearTimeout(this.#idle);
    this.calls.open.delete(this);
    const waiting = [...this.#waiting.values()];
    this.#waiting.clear();
    const failure = this.#failure === undefined ? undefined : (toPatternsError(this.#failure) as PatternsError);
    if (failure !== undefined && !this.#answered && REFUSALS.has(failure.code)) {
      this.onRefused(failure); // before a check can open the next stream
      waiting.forEach((waiter) => waiter.fail(new StreamRefused(failure)));
      return;
    }
    for (const waiter of waiting) {
      // A new error for each check (and for an OK end, which the server makes only once the
      // client stopped sending: nothing will answer these).
      waiter.fail(
        this.#failure === undefined
          ? new PatternsError(status.UNAVAILABLE, "the check stream ended before answering")
          : (toPatternsError(this.#failure) as PatternsError),
      );
    }
  }

  /** End the stream politely (the server answers what it still has, dropped here, and ends
   * it OK); a server that never answers is cancelled after the client's timeout, as the
   * call would otherwise keep the process alive. */
  #endIdle(): void {
    this.ended = true;
    this.#call.end();
    this.#idle = setTimeout(() => this.#call.cancel(), this.calls.timeoutMs);
    this.#idle.unref();
  }

  /** With no check in progress, end the stream once IDLE_END_MS passed since the last check
   * was sent (one timer, looked at again when it fires rather than reset per check). */
  #whenIdle(): void {
    if (this.#waiting.size > 0 || this.#idle !== undefined || this.ended) {
      return;
    }
    const left = IDLE_END_MS - (performance.now() - this.#lastSent);
    this.#idle = setTimeout(() => {
      this.#idle = undefined;
      if (this.#waiting.size > 0 || this.ended) {
        return; // busy again: the next quiet moment arms it anew
      }
      if (performance.now() - this.#lastSent >= IDLE_END_MS) {
        this.#endIdle();
      } else {
        this.#whenIdle();
      }
    }, Math.max(left, 0));
    this.#idle.unref();
  }
}

/** The checks of one client, over one shared CheckStream (opened by the first check, again
 * by the first check after it ended; the client's close() ends it, as its other streams). */
export class CheckStream {
  #stream: Stream | undefined;
  #nextId = 1; // unique across the client's streams
  #unaryUntil = 0; // performance.now() until which checks go unary

  constructor(
    private readonly calls: Calls,
    private readonly stub: pb.RateLimiterClient,
  ) {}

  /** The answer to `request` within `timeoutMs`, or the PatternsError a unary Check with
   * that deadline would have rejected with. `signal` cancels it (CANCELLED). */
  check(request: pb.CheckRequest, timeoutMs: number, signal?: AbortSignal): Promise<pb.CheckResponse> {
    if (signal?.aborted) {
      return Promise.reject(signal.reason);
    }
    const stream = this.#open();
    if (stream === undefined) {
      return this.#unary(request, timeoutMs, signal);
    }
    const deadline = performance.now() + timeoutMs;
    const id = this.#nextId++;
    return new Promise<pb.CheckResponse>((resolve, reject) => {
      const settled = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", cancel);
        stream.forget(id); // answered, given up or cancelled: never answered twice
      };
      const timer = setTimeout(() => {
        settled();
        reject(deadlineExceeded());
      }, timeoutMs);
      const cancel = () => {
        settled();
        reject(new PatternsError(status.CANCELLED, "Cancelled on client"));
      };
      signal?.addEventListener("abort", cancel, { once: true });
      const sent = stream.send(id, request, {
        answer: (response) => {
          settled();
          resolve(response);
        },
        fail: (error) => {
          settled();
          if (error instanceof StreamRefused) {
            // Nothing decided: as a unary Check, in the time left.
            resolve(this.#unary(request, Math.max(deadline - performance.now(), 0), signal));
          } else {
            reject(error);
          }
        },
      });
      if (!sent) {
        // (#open just said it takes checks; were it not so, a unary Check is as good.)
        settled();
        resolve(this.#unary(request, timeoutMs, signal));
      }
    });
  }

  /** The open stream, opened now if there is none (or it ended); undefined when checks go
   * unary for now, or the stream is full. */
  #open(): Stream | undefined {
    if (performance.now() < this.#unaryUntil) {
      return undefined;
    }
    if (this.#stream === undefined || this.#stream.ended) {
      this.#stream = new Stream(this.stub, this.calls, (error) => this.#refused(error));
    }
    return this.#stream.full() ? undefined : this.#stream;
  }

  /** The stream was refused with `error`: checks go unary for good from an older server
   * (UNIMPLEMENTED), else for the refusal's retry-after, or REFUSED_FOR_MS. */
  #refused(error: PatternsError): void {
    const forMs = error.code === status.UNIMPLEMENTED ? Infinity : (error.retryAfterMs ?? REFUSED_FOR_MS);
    this.#unaryUntil = performance.now() + forMs;
  }

  #unary(request: pb.CheckRequest, timeoutMs: number, signal?: AbortSignal): Promise<pb.CheckResponse> {
    return this.calls.unary(this.stub.check.bind(this.stub), request, { timeoutMs, signal });
  }
}
