/**
 * The TypeScript client of patterns-server: the generated stubs (ts-proto, @grpc/grpc-js),
 * a promise for each unary call and an async iterator for each stream, and the rich
 * details (BadRequest, ErrorInfo, RetryInfo) every service attaches to its errors.
 *
 * 64-bit fields (counts, fencing tokens) are JavaScript numbers: exact below 2^53, which
 * every value the server sends stays under.
 */
import { type CallOptions, type ClientReadableStream, Metadata, type ServiceError } from "@grpc/grpc-js";
// The grpc-js a program's clients are made with must be the one the stubs were built on
// (it checks credentials with instanceof): take credentials and Metadata from here.
export { type ChannelCredentials, credentials, Metadata, type ServiceError } from "@grpc/grpc-js";
import { BadRequest, ErrorInfo, RetryInfo } from "./gen/google/rpc/error_details";
import { Status } from "./gen/google/rpc/status";

export * as cache from "./gen/patterns/cache/v1/cache";
export * as counter from "./gen/patterns/counter/v1/counter";
export * as errors from "./gen/patterns/errors/v1/errors";
export * as events from "./gen/patterns/events/v1/events";
export * as leaderboard from "./gen/patterns/leaderboard/v1/leaderboard";
export * as lock from "./gen/patterns/lock/v1/lock";
export * as ratelimit from "./gen/patterns/ratelimit/v1/ratelimit";
export * as session from "./gen/patterns/session/v1/session";

/** How long a call may take (default 5 s), and metadata to send with it. */
export interface CallSettings {
  timeoutMs?: number;
  metadata?: Metadata;
}

type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: Res) => void,
) => unknown;

/**
 * A unary call as a promise, with a deadline: `await unary(client.check.bind(client), request)`.
 * It rejects with the grpc-js ServiceError; read it with `errorDetails`.
 */
export function unary<Req, Res>(method: UnaryMethod<Req, Res>, request: Req, settings: CallSettings = {}): Promise<Res> {
  const deadline = new Date(Date.now() + (settings.timeoutMs ?? 5_000));
  return new Promise((resolve, reject) => {
    method(request, settings.metadata ?? new Metadata(), { deadline }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

/**
 * The messages of a server stream as an async iterator: `for await (const m of messages(call))`.
 * It throws the ServiceError that ends the stream; `call.cancel()` ends it from this side.
 */
export async function* messages<T>(call: ClientReadableStream<T>): AsyncGenerator<T> {
  for await (const message of call) {
    yield message as T;
  }
}

/** A request field that broke a documented limit. */
export interface FieldViolation {
  field: string;
  description: string;
}

/** What a failed call carried. */
export interface ErrorDetails {
  /** The gRPC status code (see `status` of @grpc/grpc-js) and message. */
  code: number;
  message: string;
  /** The google.rpc.ErrorInfo reason, stable for programs to switch on; "" when none. */
  reason: string;
  /** The google.rpc.BadRequest violations (INVALID_ARGUMENT). */
  fieldViolations: FieldViolation[];
  /** The google.rpc.RetryInfo delay in milliseconds, when the server gave one. */
  retryAfterMs?: number;
}

/** Reads the status and rich details of an error a call rejected or a stream threw with. */
export function errorDetails(error: ServiceError): ErrorDetails {
  const details: ErrorDetails = {
    code: error.code,
    message: error.details ?? error.message,
    reason: "",
    fieldViolations: [],
  };
  const [raw] = error.metadata?.get("grpc-status-details-bin") ?? [];
  if (raw === undefined || typeof raw === "string") {
    return details;
  }
  for (const detail of Status.decode(raw).details) {
    const type = detail.typeUrl.slice(detail.typeUrl.lastIndexOf("/") + 1);
    if (type === "google.rpc.ErrorInfo") {
      details.reason = ErrorInfo.decode(detail.value).reason;
    } else if (type === "google.rpc.BadRequest") {
      details.fieldViolations.push(
        ...BadRequest.decode(detail.value).fieldViolations.map((v) => ({ field: v.field, description: v.description })),
      );
    } else if (type === "google.rpc.RetryInfo") {
      const delay = RetryInfo.decode(detail.value).retryDelay;
      if (delay !== undefined) {
        details.retryAfterMs = delay.seconds * 1_000 + delay.nanos / 1_000_000;
      }
    }
  }
  return details;
}
