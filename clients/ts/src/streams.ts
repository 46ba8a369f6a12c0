/**
 * `client.streams`: durable events, kept until a consumer of each group acknowledges them.
 *
 * `consume()` is an async iterator of Messages over one Consume stream; each is
 * acknowledged with `message.ack()` (or handed back with `message.nack(delayMs)`), written
 * on that same stream without waiting for the server. Delivery is at least once: an entry
 * not acknowledged within its consumer's ack timeout, or whose consumer went away, is
 * delivered again with its `deliveryCount` one higher, so a handler must be idempotent.
 * When the stream fails in a way that retrying cures (the server or its Redis unavailable,
 * the server stopping, a cut connection), the consumer opens it again after a backoff (at
 * least what the server's RetryInfo asks): the group and its pending entries live in Redis,
 * so nothing is lost; what was delivered and not acknowledged comes back by redelivery.
 * Acknowledgements given while no stream is open are sent on the next one.
 */
import { type ClientDuplexStream, status } from "@grpc/grpc-js";
import * as pb from "./gen/patterns/streams/v1/streams.js";
import { bytes, type CallOptions, type Calls, type Closable, duration, millis, sleep } from "./calls.js";
import { PatternsError, toPatternsError } from "./errors.js";
import { Backoff } from "./events.js";

/** How long close() waits, after the last acknowledgement was written, before it cancels
 * the stream: the server drops the acknowledgements it has not read when a stream is
 * cancelled, and the contract confirms none. */
export const CLOSE_SETTLE_MS = 500;
/** The contract's limit of ids in one Ack or Nack. */
const MAX_IDS = 10_000;

// Failures a new stream cures, as for a subscription: the server or Redis unavailable or
// stopping (a cut connection reads as UNAVAILABLE too), or the server at its limit of
// streams. Not CANCELLED (this client closing), not ABORTED (the group was deleted), not
// INVALID_ARGUMENT: those are for the program.
const RESUMABLE = new Set<number>([status.UNAVAILABLE, status.RESOURCE_EXHAUSTED]);

/** What an append gave: the entry's id, and `duplicate` when an earlier append with the
 * same idempotency key made it (and this one appended nothing). */
export interface Appended {
  id: string;
  duplicate: boolean;
}

/** An entry of a stream, as `read` replays it; `appendedAt` is the time part of its id. */
export interface StreamEntry {
  id: string;
  payload: Buffer;
  headers: Record<string, string>;
  appendedAt: Date | undefined;
}

/** Bounds of a stream (both apply when both are set): about the last `maxLen` entries,
 * entries younger than `maxAgeMs`; absent, no such bound. */
export interface Retention {
  maxLen?: number;
  maxAgeMs?: number;
}

export interface ConsumerInfo {
  name: string;
  /** Entries delivered to it and not acknowledged. */
  pending: number;
  /** Since it last read or claimed entries. */
  idleMs: number;
}

export interface GroupInfo {
  name: string;
  /** Entries delivered and not acknowledged. */
  pending: number;
  lastDeliveredId: string;
  /** Entries retained that the group has not been delivered yet. */
  lag: number;
  consumers: ConsumerInfo[];
}

/** A stream's description (`exists` false, and the rest empty, when there is none). */
export interface StreamInfo {
  exists: boolean;
  length: number;
  firstId: string;
  lastId: string;
  retention: Retention;
  groups: GroupInfo[];
}

/** Where a group that does not exist yet starts: "new" (entries appended from now on, the
 * default), "earliest" (every entry retained), `{ afterId }` or `{ at }` (a time). */
export type Start = "new" | "earliest" | { afterId: string } | { at: Date };

export interface ConsumeOptions {
  stream: string;
  group: string;
  /** This consumer's name in the group (for example host name and process id). */
  consumer: string;
  /** Where the group starts if this open creates it (default "new"). */
  start?: Start;
  /** Deliveries unacknowledged at once (server default 10). */
  maxInFlight?: number;
  /** How long a delivery may stay unacknowledged before it is redelivered (server
   * default 30 s). */
  ackTimeoutMs?: number;
  /** Deliveries an entry gets before it moves to `<stream>:dead` (server default 5). */
  maxDeliveries?: number;
  /** Aborting it ends the consumer, as close() does. */
  signal?: AbortSignal;
}

/**
 * An entry delivered to a consumer: `deliveryCount` is 1 the first time, more when
 * redelivered; `firstDeliveredAt` is when it was first delivered to the group,
 * `appendedAt` the time part of its id (both by the Redis clock). `ack()` it once handled,
 * or `nack()` it to have it delivered again.
 */
export class Message {
  /** @internal */
  constructor(
    readonly id: string,
    readonly payload: Buffer,
    readonly headers: Record<string, string>,
    readonly deliveryCount: number,
    readonly firstDeliveredAt: Date | undefined,
    readonly appendedAt: Date | undefined,
    private readonly consumer: Consumer,
  ) {}

  /** Acknowledge it: handled, never delivered again. Written on the consumer's stream (the
   * next one, while it is being opened again) without waiting; throws a PatternsError
   * (CANCELLED) when the consumer is closed: the entry is then delivered again after the
   * ack timeout. */
  ack(): void {
    this.consumer.send("ack", this.id);
  }

  /** Hand it back: delivered again (to this consumer or another of the group) after
   * `delayMs` (absent: at the server's next check, within a second; 0 to the consumer's ack
   * timeout, else INVALID_ARGUMENT and nothing sent), its delivery count one higher. */
  nack(delayMs?: number): void {
    this.consumer.send("nack", this.id, delayMs);
  }
}

function openRequest(options: ConsumeOptions): pb.ConsumeRequest {
  const start = options.start ?? "new";
  const open: pb.ConsumeOpen = {
    stream: options.stream,
    group: options.group,
    consumer: options.consumer,
    start: pb.StartPosition.NEW,
    startId: "",
    startTime: undefined,
    maxInFlight: options.maxInFlight ?? 0,
    ackTimeout: duration(options.ackTimeoutMs),
    maxDeliveries: options.maxDeliveries ?? 0,
  };
  if (start === "earliest") {
    open.start = pb.StartPosition.EARLIEST;
  } else if (typeof start === "object" && "afterId" in start) {
    open.start = pb.StartPosition.AT_ID;
    open.startId = start.afterId;
  } else if (typeof start === "object") {
    open.start = pb.StartPosition.AT_TIME;
    open.startTime = start.at;
  }
  return { open };
}

/** The acks and nacks waiting to be written, in as few messages as the contract allows:
 * every ack in one, the nacks of one delay in one. */
function coalesced(acks: string[], nacks: Map<number | undefined, string[]>): pb.ConsumeRequest[] {
  const requests: pb.ConsumeRequest[] = [];
  for (let i = 0; i < acks.length; i += MAX_IDS) {
    requests.push({ ack: { ids: acks.slice(i, i + MAX_IDS) } });
  }
  for (const [delayMs, ids] of nacks) {
    for (let i = 0; i < ids.length; i += MAX_IDS) {
      requests.push({ nack: { ids: ids.slice(i, i + MAX_IDS), delay: duration(delayMs) } });
    }
  }
  return requests;
}

function closedError(): PatternsError {
  return new PatternsError(
    status.CANCELLED,
    "the consumer is closed: the entry is delivered again after its ack timeout",
  );
}

/** What the inner generator yields when the server confirms the consumer (never given to
 * the reader). */
const SUBSCRIBED = Symbol("subscribed");

/**
 * The messages of a group's consumer, until closed: `for await (const message of
 * consumer)`. It opens its stream again after an interruption, with backoff. `subscribed`
 * is true while the server confirms the consumer is in place; `waitSubscribed()` opens the
 * stream and resolves once it is, consuming no message. Leaving a `for await` (break,
 * throw) or an `await using` block, `close()`, or the client's close() ends it.
 */
export class Consumer implements AsyncIterableIterator<Message>, AsyncDisposable {
  #call: ClientDuplexStream<pb.ConsumeRequest, pb.ConsumeResponse> | undefined;
  readonly #closing = new AbortController();
  #closed: Promise<void> | undefined;
  readonly #items: AsyncGenerator<Message | typeof SUBSCRIBED, void>;
  readonly #pending: Message[] = [];
  #failure: unknown;
  #reading: Promise<unknown> = Promise.resolve(); // one reader of the stream at a time
  #helper: Promise<void> | undefined;
  #subscribed = false;
  #confirmed: (() => void)[] = [];
  #ackTimeoutMs: number | undefined; // in force, as the server confirmed it
  // Acknowledgements given and not yet written: flushed together once the handler yields
  // the thread (or on the next stream, when none is open now).
  #acks: string[] = [];
  #nacks = new Map<number | undefined, string[]>();
  #flushing = false;
  #lastWrite = -Infinity; // performance.now() when the last acknowledgement was written
  readonly #closable: Closable = { close: () => void this.close() };

  /** @internal */
  constructor(
    private readonly calls: Calls,
    private readonly stub: pb.StreamsClient,
    private readonly request: pb.ConsumeRequest,
  ) {
    this.#items = this.#run();
    calls.open.add(this.#closable);
  }

  /** Whether the server has confirmed the consumer and its stream is open now. */
  get subscribed(): boolean {
    return this.#subscribed;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<Message>> {
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

  /** Called when a `for await` loop is left early: ends the consumer. */
  async return(): Promise<IteratorResult<Message>> {
    await this.close();
    return { value: undefined, done: true };
  }

  /**
   * Open the stream (if iterating has not) and resolve once the server has confirmed the
   * consumer (its group made if new): an entry appended after this reaches the group. No
   * message is consumed. Rejects with DEADLINE_EXCEEDED when no confirmation came within
   * `timeoutMs` (default: wait as long as it takes; the consumer goes on trying), or with
   * the failure that ended the consumer.
   */
  async waitSubscribed(options: { timeoutMs?: number } = {}): Promise<void> {
    if (this.#subscribed) {
      return;
    }
    if (this.#closing.signal.aborted) {
      throw new PatternsError(status.CANCELLED, "the consumer is closed");
    }
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
      throw new PatternsError(status.CANCELLED, "the consumer is closed");
    }
    throw new PatternsError(
      status.DEADLINE_EXCEEDED,
      `the server did not confirm the consumer within ${options.timeoutMs} ms`,
    );
  }

  /**
   * End the consumer: the acknowledgements given so far are written, and the stream is
   * cancelled CLOSE_SETTLE_MS after the last was (time for the server to apply them). An
   * iteration in progress ends (done). Messages delivered and not acknowledged go to the
   * group again after the ack timeout.
   */
  close(): Promise<void> {
    this.#closed ??= this.#close();
    return this.#closed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** @internal An ack or nack of `id`, written with the others given meanwhile. */
  send(kind: "ack" | "nack", id: string, delayMs?: number): void {
    if (this.#closing.signal.aborted) {
      throw closedError();
    }
    if (kind === "ack") {
      this.#acks.push(id);
    } else {
      const limit = this.#ackTimeoutMs;
      if (delayMs !== undefined && (!(delayMs >= 0) || (limit !== undefined && delayMs > limit))) {
        // The server would refuse it by ending the stream, with every message in flight.
        const problem = `must be 0 to the ack timeout (${limit ?? "?"} ms); got ${delayMs} ms`;
        throw new PatternsError(status.INVALID_ARGUMENT, `nack.delay ${problem}`, {
          reason: "INVALID_ARGUMENT",
          fieldViolations: [{ field: "nack.delay", description: problem }],
        });
      }
      const ids = this.#nacks.get(delayMs) ?? [];
      ids.push(id);
      this.#nacks.set(delayMs, ids);
    }
    if (!this.#flushing) {
      this.#flushing = true;
      setImmediate(() => this.#flush());
    }
  }

  /** Write the acknowledgements waiting, on the open stream; with none open, they wait for
   * the next (written right after its `open`). */
  #flush(): void {
    this.#flushing = false;
    const call = this.#call;
    if (call === undefined || (this.#acks.length === 0 && this.#nacks.size === 0)) {
      return;
    }
    const requests = coalesced(this.#acks, this.#nacks);
    this.#acks = [];
    this.#nacks = new Map();
    for (const request of requests) {
      // grpc-js buffers the write: nothing here waits for the server.
      call.write(request, () => {
        this.#lastWrite = performance.now();
      });
    }
  }

  async #close(): Promise<void> {
    this.#closing.abort();
    this.calls.open.delete(this.#closable);
    const call = this.#call;
    if (call !== undefined) {
      this.#flush();
      // Writes done (their callbacks ran) within CLOSE_SETTLE_MS; then the server gets the
      // rest of that time to read them before the cancel drops what it has not read.
      const end = performance.now() + CLOSE_SETTLE_MS * 4;
      while (call.writableLength > 0 && performance.now() < end) {
        await new Promise((resolve) => setTimeout(resolve, 10).unref());
      }
      const settle = this.#lastWrite + CLOSE_SETTLE_MS - performance.now();
      if (settle > 0) {
        await new Promise((resolve) => setTimeout(resolve, settle).unref());
      }
      call.cancel();
    }
  }

  #exclusive<T>(work: () => Promise<T>): Promise<T> {
    const turn = this.#reading.then(work, work);
    this.#reading = turn.catch(() => undefined);
    return turn;
  }

  #confirm(subscribed: pb.Subscribed): void {
    this.#ackTimeoutMs = subscribed.ackTimeout === undefined ? undefined : millis(subscribed.ackTimeout);
    this.#subscribed = true;
    for (const resolve of this.#confirmed.splice(0)) {
      resolve();
    }
  }

  async *#run(): AsyncGenerator<Message | typeof SUBSCRIBED, void> {
    const backoff = new Backoff();
    const closing = this.#closing.signal;
    while (!closing.aborted) {
      // No deadline: the stream lasts until closed.
      const call = this.stub.consume(this.calls.meta(), {});
      // Once the call failed, acknowledgements wait for the next stream instead of being
      // written to this one (where they would be lost); the iteration sees the failure when
      // it reads (a listener here takes it from no one).
      call.on("error", () => {
        if (this.#call === call) {
          this.#call = undefined;
        }
      });
      call.write(this.request);
      this.#call = call;
      this.#flush(); // what the last stream did not carry
      let interrupted: PatternsError;
      try {
        for await (const response of call as AsyncIterable<pb.ConsumeResponse>) {
          if (closing.aborted) {
            return; // what arrives while closing is delivered again, later
          }
          if (response.subscribed !== undefined) {
            this.#confirm(response.subscribed);
            backoff.reset();
            yield SUBSCRIBED;
          } else if (response.delivery !== undefined) {
            const d = response.delivery;
            const headers = { ...d.headers };
            yield new Message(d.id, Buffer.from(d.payload), headers, d.deliveryCount, d.firstDeliveredAt, d.appendedAt, this);
          }
        }
        if (closing.aborted) {
          return;
        }
        interrupted = new PatternsError(status.UNAVAILABLE, "the server ended the stream");
      } catch (error) {
        if (closing.aborted) {
          return;
        }
        const failure = toPatternsError(error);
        if (!(failure instanceof PatternsError) || !RESUMABLE.has(failure.code)) {
          throw failure;
        }
        interrupted = failure;
      } finally {
        this.#subscribed = false;
        // Closing, close() ends the call itself, once it has written what is given.
        if (!closing.aborted) {
          this.#call = undefined;
          call.cancel();
        }
      }
      await sleep(backoff.after(interrupted), closing);
    }
  }
}

function retention(message: pb.Retention | undefined): Retention {
  const result: Retention = {};
  if (message?.maxLen) {
    result.maxLen = message.maxLen;
  }
  const age = millis(message?.maxAge);
  if (age > 0) {
    result.maxAgeMs = age;
  }
  return result;
}

function bounds(value: Retention): pb.Retention {
  return { maxLen: value.maxLen ?? 0, maxAge: duration(value.maxAgeMs) };
}

export class Streams {
  /** @internal */
  constructor(
    private readonly calls: Calls,
    private readonly stub: pb.StreamsClient,
  ) {}

  /** Append an entry to `stream` (made if new); payload as text (UTF-8) or bytes. With
   * `idempotencyKey`, a repeat of the key within `idempotencyWindowMs` (server default 24
   * hours) appends nothing and answers the first append's id, with `duplicate` true. */
  async append(
    stream: string,
    payload: string | Uint8Array,
    options: CallOptions & {
      headers?: Record<string, string>;
      idempotencyKey?: string;
      idempotencyWindowMs?: number;
    } = {},
  ): Promise<Appended> {
    const request: pb.AppendRequest = {
      stream,
      payload: bytes(payload),
      headers: { ...(options.headers ?? {}) },
      idempotencyKey: options.idempotencyKey ?? "",
      idempotencyWindow: duration(options.idempotencyWindowMs),
    };
    const response = await this.calls.unary(this.stub.append.bind(this.stub), request, options);
    return { id: response.id, duplicate: response.duplicate };
  }

  /** Replay `stream` without a group, oldest first: the entries after an id (`after` a
   * string), or appended from a time (a Date); from the oldest retained when absent. At
   * most `limit` (1 to 1,000; server default 100): read the next page after the last id. */
  async read(
    stream: string,
    options: CallOptions & { after?: string | Date; limit?: number } = {},
  ): Promise<StreamEntry[]> {
    const request: pb.ReadRequest = { stream, limit: options.limit ?? 0 };
    if (options.after instanceof Date) {
      request.atTime = options.after;
    } else if (options.after !== undefined) {
      request.afterId = options.after;
    }
    const response = await this.calls.unary(this.stub.read.bind(this.stub), request, options);
    return response.entries.map((e) => ({
      id: e.id,
      payload: Buffer.from(e.payload),
      headers: { ...e.headers },
      appendedAt: e.appendedAt,
    }));
  }

  /** A Consumer of `stream` as `consumer` of `group`: `for await (const message of
   * client.streams.consume({...})) { handle(message); message.ack(); }`. */
  consume(options: ConsumeOptions): Consumer {
    const consumer = new Consumer(this.calls, this.stub, openRequest(options));
    if (options.signal?.aborted) {
      void consumer.close();
    }
    options.signal?.addEventListener("abort", () => void consumer.close(), { once: true });
    return consumer;
  }

  /** The stream's length, first and last ids, retention, and groups with their consumers,
   * pending entries and lag. */
  async info(stream: string, options: CallOptions = {}): Promise<StreamInfo> {
    const r = await this.calls.unary(this.stub.info.bind(this.stub), { stream }, options);
    return {
      exists: r.exists,
      length: r.length,
      firstId: r.firstId,
      lastId: r.lastId,
      retention: retention(r.retention),
      groups: r.groups.map((g) => ({
        name: g.name,
        pending: g.pending,
        lastDeliveredId: g.lastDeliveredId,
        lag: g.lag,
        consumers: g.consumers.map((c) => ({ name: c.name, pending: c.pending, idleMs: millis(c.idle) })),
      })),
    };
  }

  /** Delete entries from the start of `stream` once: beyond about `maxLen`, or older than
   * `maxAgeMs` (at least one); how many went (call again while not 0). Pending entries
   * deleted are never delivered again. */
  async trim(stream: string, bound: Retention, options: CallOptions = {}): Promise<number> {
    const request = { stream, bounds: bounds(bound) };
    return (await this.calls.unary(this.stub.trim.bind(this.stub), request, options)).deleted;
  }

  /** Bound `stream` from now on (each append trims it; `{}`: no bound), and apply the
   * bounds now; how many entries that deleted. */
  async setRetention(stream: string, value: Retention, options: CallOptions = {}): Promise<number> {
    const request = { stream, retention: bounds(value) };
    return (await this.calls.unary(this.stub.setRetention.bind(this.stub), request, options)).deleted;
  }

  /** Delete `group` with its pending entries (the entries stay in the stream); its
   * consumers end with ABORTED (reason GROUP_DELETED). Whether there was such a group. */
  async deleteGroup(stream: string, group: string, options: CallOptions = {}): Promise<boolean> {
    const request = { stream, group };
    return (await this.calls.unary(this.stub.deleteGroup.bind(this.stub), request, options)).deleted;
  }
}
