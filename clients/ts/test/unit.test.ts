/** What needs no server: error decoding, fallbacks, conversions, options, the package's entries. */
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { describe, it } from "node:test";
import { Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { duration, millis } from "../src/calls.js";
import { Backoff, FIRST_BACKOFF_MS, LAST_BACKOFF_MS } from "../src/events.js";
import { Any } from "../src/gen/google/protobuf/any.js";
import { BadRequest, ErrorInfo, RetryInfo } from "../src/gen/google/rpc/error_details.js";
import { Status } from "../src/gen/google/rpc/status.js";
import { credentials, fallsBack, PatternsClient, PatternsError, Policy, toPatternsError } from "../src/index.js";

/** A ServiceError as grpc-js makes one from a status with details in its trailers. */
function serviceError(code: status, details: Any[]): ServiceError {
  const metadata = new Metadata();
  const packed = Status.encode({ code, message: "refused", details }).finish();
  metadata.set("grpc-status-details-bin", Buffer.from(packed));
  return Object.assign(new Error(`${code} ${status[code]}: refused`), { code, details: "refused", metadata });
}

const packed = (type: string, value: Uint8Array): Any => ({ typeUrl: `type.googleapis.com/${type}`, value: Buffer.from(value) });

describe("PatternsError", () => {
  it("decodes the reason, field violations and retry-after of a rich status", () => {
    const error = toPatternsError(
      serviceError(status.INVALID_ARGUMENT, [
        packed("google.rpc.ErrorInfo", ErrorInfo.encode({ reason: "INVALID_ARGUMENT", domain: "d", metadata: {} }).finish()),
        packed(
          "google.rpc.BadRequest",
          BadRequest.encode({ fieldViolations: [{ field: "key", description: "empty", reason: "", localizedMessage: undefined }] }).finish(),
        ),
        packed("google.rpc.RetryInfo", RetryInfo.encode({ retryDelay: { seconds: 1, nanos: 500_000_000 } }).finish()),
      ]),
    );
    assert.ok(error instanceof PatternsError);
    assert.equal(error.code, status.INVALID_ARGUMENT);
    assert.equal(error.codeName, "INVALID_ARGUMENT");
    assert.equal(error.reason, "INVALID_ARGUMENT");
    assert.deepEqual(error.fieldViolations, [{ field: "key", description: "empty" }]);
    assert.equal(error.retryAfterMs, 1_500);
    assert.equal(error.details, "refused");
    assert.match(error.message, /^INVALID_ARGUMENT: refused$/);
  });

  it("keeps the code and message of a status without details", () => {
    const error = toPatternsError(Object.assign(new Error("x"), { code: status.UNAVAILABLE, details: "down", metadata: new Metadata() }));
    assert.ok(error instanceof PatternsError);
    assert.equal(error.codeName, "UNAVAILABLE");
    assert.equal(error.reason, "");
    assert.equal(error.retryAfterMs, undefined);
  });

  it("leaves a program's own errors as they are", () => {
    const own = new Error("mine");
    assert.equal(toPatternsError(own), own);
  });
});

describe("fallsBack", () => {
  const error = (code: status, reason = "") => new PatternsError(code, "x", { reason });
  it("covers an unavailable, slow or overloaded server", () => {
    assert.ok(fallsBack(error(status.UNAVAILABLE)));
    assert.ok(fallsBack(error(status.DEADLINE_EXCEEDED)));
    assert.ok(fallsBack(error(status.RESOURCE_EXHAUSTED, "OVERLOADED")));
    assert.ok(fallsBack(error(status.RESOURCE_EXHAUSTED, "TENANT_OVERLOADED")));
  });
  it("does not cover what the caller must fix", () => {
    assert.ok(!fallsBack(error(status.RESOURCE_EXHAUSTED, "SLOW_CONSUMER")));
    assert.ok(!fallsBack(error(status.INVALID_ARGUMENT)));
    assert.ok(!fallsBack(error(status.UNAUTHENTICATED)));
    assert.ok(!fallsBack(new Error("a program's own")));
  });
});

describe("conversions and options", () => {
  it("turns milliseconds into Durations and back", () => {
    assert.deepEqual(duration(1_500), { seconds: 1, nanos: 500_000_000 });
    assert.deepEqual(duration(60_000), { seconds: 60, nanos: 0 });
    assert.equal(duration(undefined), undefined);
    assert.equal(millis({ seconds: 2, nanos: 250_000_000 }), 2_250);
    assert.equal(millis(undefined), 0);
  });

  it("makes policies by algorithm", () => {
    assert.deepEqual(Policy.gcra(3, 60_000), { algorithm: "GCRA", limit: 3, periodMs: 60_000, burst: 0 });
    assert.deepEqual(Policy.fixedWindow(10, 1_000), { algorithm: "FIXED_WINDOW", limit: 10, periodMs: 1_000 });
  });

  it("backs off doubling with jitter up to 5 s, at least the server's retry-after", () => {
    const backoff = new Backoff();
    const quiet = new PatternsError(status.UNAVAILABLE, "down");
    const first = backoff.after(quiet);
    assert.ok(first >= FIRST_BACKOFF_MS / 2 && first <= FIRST_BACKOFF_MS, `${first}`);
    for (let i = 0; i < 10; i++) {
      assert.ok(backoff.after(quiet) <= LAST_BACKOFF_MS);
    }
    assert.ok(backoff.after(new PatternsError(status.UNAVAILABLE, "down", { retryAfterMs: 7_000 })) >= 7_000);
    backoff.reset();
    assert.ok(backoff.after(quiet) <= FIRST_BACKOFF_MS);
  });

  it("refuses an API key over plaintext, and a certificate without its key", () => {
    assert.throws(() => new PatternsClient("localhost:1", { apiKey: "k" }), /only over TLS/);
    assert.throws(() => new PatternsClient("localhost:1", { apiKey: "k", tls: credentials.createInsecure() }), /only over TLS/);
    assert.throws(() => new PatternsClient("localhost:1", { tls: { cert: "pem" } }), /cert and key go together/);
    assert.throws(() => new PatternsClient("localhost:1", { tls: "system", apiKey: " " }), /empty/);
  });

  it("reads its connection from the PATTERNS_* variables", () => {
    assert.throws(() => PatternsClient.fromEnv({}, { PATTERNS_TARGET: "localhost:1", PATTERNS_API_KEY: "k" }), /only over TLS/);
    const client = PatternsClient.fromEnv({}, { PATTERNS_TARGET: "localhost:1" });
    assert.equal(client.channel.getTarget(), "dns:localhost:1");
    client.close();
  });
});

describe("the package", () => {
  it("loads through its CommonJS entry too, on the same grpc-js", async () => {
    // The package's own name resolves through its exports map (a self-reference): the
    // require condition gives dist/cjs, the import condition dist/esm.
    const required = createRequire(import.meta.url)("@patterns-server/client");
    assert.equal(typeof required.PatternsClient, "function");
    assert.equal(required.credentials, createRequire(import.meta.url)("@grpc/grpc-js").credentials);
    const imported = await import("@patterns-server/client");
    assert.equal(typeof imported.PatternsClient, "function");
    assert.notEqual(required.PatternsClient, imported.PatternsClient); // two builds, as mapped
  });
});
