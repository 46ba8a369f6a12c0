/**
 * How the services make calls: the client's deadline and metadata on every call, every
 * failure as a PatternsError, and streams that the client's close() ends.
 */
import {
  type CallOptions as GrpcCallOptions,
  type ClientReadableStream,
  type ClientUnaryCall,
  Metadata,
  type ServiceError,
} from "@grpc/grpc-js";
import type { Duration } from "./gen/google/protobuf/duration.js";
import { toPatternsError } from "./errors.js";

/** Per call: a deadline in place of the client's `timeoutMs`, a signal that cancels the
 * call (it then rejects with CANCELLED), metadata sent along with the client's. */
export interface CallOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
  metadata?: Metadata;
}

/** The fallback budget of the recipes (a rate-limit check, a cache read). */
export const FALLBACK_AFTER_MS = 200;

type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<GrpcCallOptions>,
  callback: (error: ServiceError | null, response: Res) => void,
) => ClientUnaryCall;

type StreamMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options?: Partial<GrpcCallOptions>,
) => ClientReadableStream<Res>;

/** Something the client's close() must end (an open stream). */
export interface Closable {
  close(): void;
}

export class Calls {
  readonly open = new Set<Closable>();

  constructor(
    readonly timeoutMs: number,
    private readonly metadata: Metadata,
  ) {}

  /** The client's metadata, with `extra`'s entries added. */
  meta(extra?: Metadata): Metadata {
    const metadata = this.metadata.clone();
    if (extra !== undefined) {
      metadata.merge(extra);
    }
    return metadata;
  }

  /** `method(request)` as a promise, within `options.timeoutMs` (else the client's) plus
   * `longerByMs` (a call that waits on the server, such as a lock's wait). */
  unary<Req, Res>(method: UnaryMethod<Req, Res>, request: Req, options: CallOptions = {}, longerByMs = 0): Promise<Res> {
    const deadline = new Date(Date.now() + (options.timeoutMs ?? this.timeoutMs) + longerByMs);
    const signal = options.signal;
    return new Promise<Res>((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      const cancel = () => call.cancel();
      const call = method(request, this.meta(options.metadata), { deadline }, (error, response) => {
        signal?.removeEventListener("abort", cancel);
        if (error) {
          reject(toPatternsError(error));
        } else {
          resolve(response);
        }
      });
      signal?.addEventListener("abort", cancel, { once: true });
    });
  }

  /** A server stream without a deadline (it lasts as long as its reader wants). */
  stream<Req, Res>(method: StreamMethod<Req, Res>, request: Req, metadata?: Metadata): ClientReadableStream<Res> {
    return method(request, this.meta(metadata), {});
  }
}

/** Milliseconds as a protobuf Duration; undefined stays undefined (the server's default). */
export function duration(ms: number | undefined): Duration | undefined {
  if (ms === undefined) {
    return undefined;
  }
  const whole = Math.floor(ms);
  return { seconds: Math.floor(whole / 1_000), nanos: (whole % 1_000) * 1_000_000 + Math.round((ms - whole) * 1_000_000) };
}

/** A protobuf Duration in milliseconds (0 when absent). */
export function millis(value: Duration | undefined): number {
  return value === undefined ? 0 : value.seconds * 1_000 + value.nanos / 1_000_000;
}

/** Bytes of a payload or value given as text or bytes (text as UTF-8). */
export function bytes(value: string | Uint8Array): Buffer {
  return typeof value === "string" ? Buffer.from(value, "utf8") : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve();
      return;
    }
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
