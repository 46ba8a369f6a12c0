package io.patterns.client;

import io.grpc.Status;
import java.time.Duration;
import java.util.List;
import java.util.Optional;
import java.util.Set;

/**
 * A failed call of patterns-server, or a failure of one of this client's recipes: the one
 * exception every method throws (unchecked: no raw {@code StatusRuntimeException} escapes).
 *
 * <p>It carries what the server's rich status said: {@link #code()} (the gRPC status code),
 * {@link #message()} (the server's words), {@link #reason()} (the stable
 * {@code google.rpc.ErrorInfo} reason, for programs to switch on: "INVALID_ARGUMENT",
 * "REDIS_UNAVAILABLE", "OVERLOADED", ...; "" when none), {@link #fieldViolations()} (from
 * {@code google.rpc.BadRequest}) and {@link #retryAfter()} (from {@code google.rpc.RetryInfo}).
 *
 * <pre>{@code
 * try {
 *   client.rateLimit().check("", policy);
 * } catch (PatternsException e) {
 *   e.code();                          // INVALID_ARGUMENT
 *   e.fieldViolations().get(0).field() // "key"
 *   e.reason();                        // "INVALID_ARGUMENT"
 * }
 * }</pre>
 */
public class PatternsException extends RuntimeException {
  private static final long serialVersionUID = 1L;
  // What a recipe's fallback covers besides UNAVAILABLE and DEADLINE_EXCEEDED: the server,
  // or the caller's share of it, overloaded. Not what the caller must fix (a wrong key, a
  // refused argument, a request too large), which a fallback would only hide.
  private static final Set<String> OVERLOAD_REASONS = Set.of("OVERLOADED", "TENANT_OVERLOADED");

  private final Status.Code code;
  private final String serverMessage;
  private final String reason;
  private final List<ErrorDetails.FieldViolation> fieldViolations;
  private final Duration retryAfter;

  /** A failure with these parts; {@code retryAfter} may be null (none was given). */
  public PatternsException(
      Status.Code code,
      String message,
      String reason,
      List<ErrorDetails.FieldViolation> fieldViolations,
      Duration retryAfter,
      Throwable cause) {
    super(describe(code, message, reason), cause);
    this.code = Convert.required(code, "code");
    this.serverMessage = message == null ? "" : message;
    this.reason = reason == null ? "" : reason;
    this.fieldViolations = List.copyOf(fieldViolations);
    this.retryAfter = retryAfter;
  }

  /** A failure of this client's own, with a code and no details. */
  public PatternsException(Status.Code code, String message) {
    this(code, message, "", List.of(), null, null);
  }

  /**
   * The PatternsException a failure of a call stands for: a {@code StatusRuntimeException}
   * or {@code StatusException} decoded (its rich details included), a PatternsException
   * itself, anything else as UNKNOWN.
   */
  public static PatternsException from(Throwable error) {
    if (error instanceof PatternsException patterns) {
      return patterns;
    }
    ErrorDetails details = ErrorDetails.of(error);
    return new PatternsException(
        details.code(),
        details.message(),
        details.reason(),
        details.fieldViolations(),
        details.retryAfter().orElse(null),
        error);
  }

  /** The gRPC status code: INVALID_ARGUMENT, UNAVAILABLE, ... */
  public Status.Code code() {
    return code;
  }

  /** The server's message ("" when none); {@link #getMessage()} adds the code and reason. */
  public String message() {
    return serverMessage;
  }

  /** The ErrorInfo reason ("" when none): INVALID_ARGUMENT, REDIS_UNAVAILABLE, OVERLOADED, ... */
  public String reason() {
    return reason;
  }

  /** The request fields that broke a documented limit (BadRequest), in order. */
  public List<ErrorDetails.FieldViolation> fieldViolations() {
    return fieldViolations;
  }

  /** How long to wait before the same call may succeed (RetryInfo), when the server said. */
  public Optional<Duration> retryAfter() {
    return Optional.ofNullable(retryAfter);
  }

  /**
   * Whether a recipe's fallback covers this failure: UNAVAILABLE (the server or its Redis
   * unavailable, or no connection), DEADLINE_EXCEEDED (no answer within the budget: a paused
   * server or Redis), RESOURCE_EXHAUSTED with reason OVERLOADED or TENANT_OVERLOADED.
   */
  public boolean fallsBack() {
    return code == Status.Code.UNAVAILABLE
        || code == Status.Code.DEADLINE_EXCEEDED
        || (code == Status.Code.RESOURCE_EXHAUSTED && OVERLOAD_REASONS.contains(reason));
  }

  private static String describe(Status.Code code, String message, String reason) {
    String name = String.valueOf(code);
    String why = reason == null || reason.isEmpty() || reason.equals(name) ? "" : " (" + reason + ")";
    return name + why + ": " + (message == null ? "" : message);
  }
}
