/**
 * PatternsError: every failure of a call, with what the server's rich status said (the
 * google.rpc ErrorInfo reason, BadRequest field violations, RetryInfo delay).
 */
import { Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { BadRequest, ErrorInfo, RetryInfo } from "./gen/google/rpc/error_details.js";
import { Status } from "./gen/google/rpc/status.js";

/** A request field that broke a documented limit, and what is wrong with it. */
export interface FieldViolation {
  field: string;
  description: string;
}

/** The canonical name of a gRPC status code: `codeName(3)` is "INVALID_ARGUMENT". */
export function codeName(code: number): string {
  return status[code] ?? "UNKNOWN";
}

/**
 * A call failed. `code` is its gRPC status code (compare with `status` of this package:
 * `error.code === status.NOT_FOUND`), `codeName` its canonical name, `reason` the stable
 * ErrorInfo reason ("" when none) for programs to switch on, `fieldViolations` the
 * BadRequest fields (INVALID_ARGUMENT), `retryAfterMs` the RetryInfo delay when the server
 * gave one. `details` is the server's message; `metadata` the call's trailers.
 */
export class PatternsError extends Error {
  override readonly name: string = "PatternsError";
  readonly code: status;
  readonly details: string;
  readonly reason: string;
  readonly fieldViolations: readonly FieldViolation[];
  readonly retryAfterMs: number | undefined;
  readonly metadata: Metadata;

  constructor(
    code: status,
    details: string,
    extra: {
      reason?: string;
      fieldViolations?: readonly FieldViolation[];
      retryAfterMs?: number;
      metadata?: Metadata;
      cause?: unknown;
    } = {},
  ) {
    const reason = extra.reason ?? "";
    const shown = reason && reason !== codeName(code) ? ` (${reason})` : "";
    super(`${codeName(code)}${shown}: ${details}`, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.code = code;
    this.details = details;
    this.reason = reason;
    this.fieldViolations = extra.fieldViolations ?? [];
    this.retryAfterMs = extra.retryAfterMs;
    this.metadata = extra.metadata ?? new Metadata();
  }

  /** The canonical name of `code`, such as "INVALID_ARGUMENT". */
  get codeName(): string {
    return codeName(this.code);
  }
}

/** `locks.hold` did not get the lock within its wait (code ABORTED, reason NOT_ACQUIRED). */
export class LockNotAcquiredError extends PatternsError {
  override readonly name: string = "LockNotAcquiredError";

  constructor(readonly lockName: string) {
    super(status.ABORTED, `lock ${JSON.stringify(lockName)} was not acquired within the wait`, {
      reason: "NOT_ACQUIRED",
    });
  }
}

/**
 * The PatternsError of a grpc-js ServiceError (any other value is returned as it is: a
 * PatternsError already, or a program's own error).
 */
export function toPatternsError(error: unknown): unknown {
  if (error instanceof PatternsError || !isServiceError(error)) {
    return error;
  }
  let reason = "";
  let retryAfterMs: number | undefined;
  const fieldViolations: FieldViolation[] = [];
  for (const detail of statusDetails(error)) {
    const type = detail.typeUrl.slice(detail.typeUrl.lastIndexOf("/") + 1);
    if (type === "google.rpc.ErrorInfo") {
      reason = ErrorInfo.decode(detail.value).reason;
    } else if (type === "google.rpc.BadRequest") {
      for (const violation of BadRequest.decode(detail.value).fieldViolations) {
        fieldViolations.push({ field: violation.field, description: violation.description });
      }
    } else if (type === "google.rpc.RetryInfo") {
      const delay = RetryInfo.decode(detail.value).retryDelay;
      if (delay !== undefined) {
        retryAfterMs = delay.seconds * 1_000 + delay.nanos / 1_000_000;
      }
    }
  }
  return new PatternsError(error.code, error.details ?? error.message, {
    reason,
    fieldViolations,
    retryAfterMs,
    metadata: error.metadata,
    cause: error,
  });
}

function isServiceError(error: unknown): error is ServiceError {
  return error instanceof Error && typeof (error as Partial<ServiceError>).code === "number" && "metadata" in error;
}

function statusDetails(error: ServiceError): { typeUrl: string; value: Uint8Array }[] {
  const [raw] = error.metadata?.get("grpc-status-details-bin") ?? [];
  if (raw === undefined || typeof raw === "string") {
    return [];
  }
  try {
    return Status.decode(raw).details;
  } catch {
    return []; // trailers that are not a google.rpc.Status: the code and message still hold
  }
}

// What a fallback covers: the server or its Redis unreachable or too slow, or the server (or
// the caller's share of it) overloaded. Not what the caller must fix (a wrong argument or
// key), which a fallback would only hide.
const OVERLOAD_REASONS = new Set(["OVERLOADED", "TENANT_OVERLOADED"]);

/**
 * Whether a recipe's fallback covers `error`: UNAVAILABLE, DEADLINE_EXCEEDED, and
 * RESOURCE_EXHAUSTED with reason OVERLOADED or TENANT_OVERLOADED.
 */
export function fallsBack(error: unknown): boolean {
  if (!(error instanceof PatternsError)) {
    return false;
  }
  if (error.code === status.UNAVAILABLE || error.code === status.DEADLINE_EXCEEDED) {
    return true;
  }
  return error.code === status.RESOURCE_EXHAUSTED && OVERLOAD_REASONS.has(error.reason);
}
