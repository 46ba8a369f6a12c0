/**
 * `client.events`: publish, and subscriptions that survive outages and say what they missed.
 *
 * A subscription is an async iterator of events and gaps. When its stream fails in a way
 * that retrying cures (the server or its Redis unavailable, the server stopping, the reader
 * too slow), it subscribes again after a backoff (at least what the server's RetryInfo
 * asks) and, once subscribed again, yields a gap: Pub/Sub keeps nothing for absent
 * subscribers, so events published meanwhile are lost, and the reader should reload what it
 * derives from them.
 */
import { type ClientReadableStream, status } from "@grpc/grpc-js";
import type * as pb from "./gen/patterns/events/v1/events.js";
import { bytes, type CallOptions, type Calls, type Closable, sleep } from "./calls.js";
import { PatternsError, toPatternsError } from "./errors.js";

/** A message: its channel, the pattern it matched ("" for a channel subscription), its
 * payload, and when the server received it. */
export interface Event {
  type: "event";
  channel: string;
  pattern: string;
  payload: Buffer;
  receivedAt: Date | undefined;
}

/** The subscription was interrupted by `error` and is back: events published in between
 * were lost. */
export interface Gap {
  type: "gap";
  error: PatternsError;
}

export type SubscriptionItem = Event | Gap;

/** Backoff between resubscriptions: doubling from 100 ms to 5 s, with jitter, at least the
 * server's RetryInfo. */
export const FIRST_BACKOFF_MS = 100;
export const LAST_BACKOFF_MS = 5_000;

// Failures a new subscription cures: the server or Redis unavailable or stopping (a cut
// connection reads as UNAVAILABLE too), the server or the tenant at its limit of streams,
// or the reader too slow (RESOURCE_EXHAUSTED). Not CANCELLED: that is this client closing.
// Not UNAUTHENTICATED: a revoked key stays revoked, and retrying it would be a loop.
const RESUMABLE = new Set<number>([status.UNAVAILABLE, status.RESOURCE_EXHAUSTED]);

/** What the inner generator yields when the server confirms the subscription (never given
 * to the reader): waitSubscribed reads up to it and no further. */
const SUBSCRIBED = Symbol("subscribed");

/** Waits between attempts: doubling, with jitter, at least what the server asked for. */
export class Backoff {
  #next = FIRST_BACKOFF_MS;

  reset(): void {
    this.#next = FIRST_BACKOFF_MS;
  }

  /** The wait before the next attempt, after `error`. */
  after(error: PatternsError): number {
    const delay = Math.max(this.#next * (0.5 + Math.random() / 2), error.retryAfterMs ?? 0);
    this.#next = Math.min(LAST_BACKOFF_MS, this.#next * 2);
    return delay;
  }
}

function event(message: pb.Event): Event {
  return {
    type: "event",
    channel: message.channel,
    pattern: message.pattern,
    payload: Buffer.from(message.payload),
    receivedAt: message.receivedAt,
  };
}

/**
 * Events of some channels and patterns, until closed: `for await (const item of sub)`, each
 * item an Event or a Gap (`item.type`). `waitSubscribed()` returns once the server has
 * confirmed the subscription, consuming no event. Leaving a `for await` (break, throw) or
 * an `await using` block, or `close()`, ends it.
 */
export class Subscription implements AsyncIterableIterator<SubscriptionItem>, AsyncDisposable {
  #call: ClientReadableStream<pb.SubscribeResponse> | undefined;
  readonly #closing = new AbortController();
  readonly #items: AsyncGenerator<SubscriptionItem | typeof SUBSCRIBED, void>;
  readonly #pending: SubscriptionItem[] = [];
  #failure: unknown;
  #reading: Promise<unknown> = Promise.resolve(); // one reader of the stream at a time
  #helper: Promise<void> | undefined;
  #subscribed = false;
  #confirmed: (() => void)[] = [];
  readonly #closable: Closable = { close: () => void this.close() };

  /** @internal */
  constructor(
    private readonly calls: Calls,
    private readonly stub: pb.EventsClient,
    private readonly request: pb.SubscribeRequest,
  ) {
    this.#items = this.#run();
    calls.open.add(this.#closable);
  }

  /** Whether the server has confirmed the subscription and it is in place now. */
  get subscribed(): boolean {
    return this.#subscribed;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<SubscriptionItem>> {
    return this.#exclusive(async () => {
      for (;;) {
        const pending = this.#pending.shift();
        if (pending !== undefined) {
          return { value: pending, done: false };
        }
        if (this.#failure !== undefined) {
          const failure = this.#failure;
          this.#failure = undefined;
          throw failure;
        }
        const result = await this.#items.next();
        if (result.done) {
          return { value: undefined, done: true };
        }
        if (result.value !== SUBSCRIBED) {
          return { value: result.value, done: false };
        }
      }
    });
  }

  /** Called when a `for await` loop is left early: ends the subscription. */
  async return(): Promise<IteratorResult<SubscriptionItem>> {
    await this.close();
    return { value: undefined, done: true };
  }

  /**
   * Open the stream (if iterating has not) and resolve once the server has confirmed the
   * subscription: every event published after this reaches it. No event is consumed.
   * Rejects with DEADLINE_EXCEEDED when no confirmation came within `timeoutMs` (default:
   * wait as long as it takes; the subscription goes on trying), or with the failure that
   * ended the subscription.
   */
  async waitSubscribed(options: { timeoutMs?: number } = {}): Promise<void> {
    if (this.#subscribed) {
      return;
    }
    if (this.#closing.signal.aborted) {
      throw new PatternsError(status.CANCELLED, "the subscription is closed");
    }
    // The helper reads the stream only when no iteration does; while one does, the
    // iteration sees the confirmation: whichever comes first.
    this.#helper ??= this.#exclusive(async () => {
      while (!this.#subscribed && !this.#closing.signal.aborted) {
        const result = await this.#items.next();
        if (result.done || result.value === SUBSCRIBED) {
          return;
        }
        this.#pending.push(result.value);
      }
    })
      .catch((error: unknown) => {
        this.#failure = error;
      })
      .finally(() => {
        this.#helper = undefined;
      });
    const confirmed = new Promise<void>((resolve) => this.#confirmed.push(resolve));
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<"expired">((resolve) => {
      if (options.timeoutMs !== undefined) {
        timer = setTimeout(() => resolve("expired"), options.timeoutMs);
      }
    });
    try {
      await Promise.race([this.#helper, confirmed, expired]);
    } finally {
      clearTimeout(timer);
    }
    if (this.#subscribed) {
      return;
    }
    if (this.#failure !== undefined) {
      throw this.#failure;
    }
    if (this.#closing.signal.aborted) {
      throw new PatternsError(status.CANCELLED, "the subscription is closed");
    }
    throw new PatternsError(
      status.DEADLINE_EXCEEDED,
      `the server did not confirm the subscription within ${options.timeoutMs} ms`,
    );
  }

  /** End the subscription; an iteration in progress ends (done). */
  async close(): Promise<void> {
    this.#closing.abort();
    this.#call?.cancel();
    this.calls.open.delete(this.#closable);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #exclusive<T>(work: () => Promise<T>): Promise<T> {
    const turn = this.#reading.then(work, work);
    this.#reading = turn.catch(() => undefined);
    return turn;
  }

  #confirm(): void {
    this.#subscribed = true;
    for (const resolve of this.#confirmed.splice(0)) {
      resolve();
    }
  }

  async *#run(): AsyncGenerator<SubscriptionItem | typeof SUBSCRIBED, void> {
    const backoff = new Backoff();
    const closing = this.#closing.signal;
    let interrupted: PatternsError | undefined;
    while (!closing.aborted) {
      const call = this.calls.stream(this.stub.subscribe.bind(this.stub), this.request);
      this.#call = call;
      try {
        for await (const message of call as AsyncIterable<pb.SubscribeResponse>) {
          if (message.subscribed !== undefined) {
            this.#confirm();
            backoff.reset();
            yield SUBSCRIBED;
            if (interrupted !== undefined) {
              yield { type: "gap", error: interrupted };
              interrupted = undefined;
            }
          } else if (message.batch !== undefined) {
            for (const each of message.batch.events) {
              yield event(each);
            }
          } else if (message.event !== undefined) {
            yield event(message.event); // a server older than SubscribeRequest.batch
          }
        }
        if (closing.aborted) {
          return;
        }
        interrupted ??= new PatternsError(status.UNAVAILABLE, "the server ended the subscription");
      } catch (error) {
        if (closing.aborted) {
          return;
        }
        const failure = toPatternsError(error);
        if (!(failure instanceof PatternsError) || !RESUMABLE.has(failure.code)) {
          throw failure;
        }
        interrupted ??= failure;
      } finally {
        call.cancel();
        this.#subscribed = false;
      }
      await sleep(backoff.after(interrupted), closing);
    }
  }
}

export class Events {
  /** @internal */
  constructor(
    private readonly calls: Calls,
    private readonly stub: pb.EventsClient,
  ) {}

  /** Publish `payload` (text as UTF-8) on `channel`; how many Redis subscriber connections
   * took it (each server counts once, however many of its streams receive it). */
  async publish(channel: string, payload: string | Uint8Array, options: CallOptions = {}): Promise<number> {
    const request = { channel, payload: bytes(payload) };
    return (await this.calls.unary(this.stub.publish.bind(this.stub), request, options)).receivers;
  }

  /** Events of `channels` and of the channels `patterns` (globs) match, until closed;
   * resubscribes after an interruption, then yields a gap. Batches are asked for (the
   * server sends what a slow reader missed in one message); items come one by one. */
  subscribe(topics: {
    channels?: readonly string[];
    patterns?: readonly string[];
    /** Aborting it ends the subscription, as close() does. */
    signal?: AbortSignal;
  }): Subscription {
    const request = { channels: [...(topics.channels ?? [])], patterns: [...(topics.patterns ?? [])], batch: true };
    const subscription = new Subscription(this.calls, this.stub, request);
    if (topics.signal?.aborted) {
      void subscription.close();
    }
    topics.signal?.addEventListener("abort", () => void subscription.close(), { once: true });
    return subscription;
  }
}
