package io.patterns.client;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import com.google.rpc.RetryInfo;
import io.grpc.Status;
import io.grpc.protobuf.StatusProto;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

/**
 * What a failed call of patterns-server carried: its status, and the rich details every
 * service attaches (google.rpc.BadRequest, ErrorInfo, RetryInfo).
 *
 * <pre>{@code
 * } catch (StatusRuntimeException e) {
 *   ErrorDetails details = ErrorDetails.of(e);
 *   details.reason();           // "INVALID_ARGUMENT", "REDIS_UNAVAILABLE", ...
 *   details.fieldViolations();  // [FieldViolation[field=key, description=...]]
 *   details.retryAfter();       // Optional[PT1S]
 * }
 * }</pre>
 */
public record ErrorDetails(
    Status.Code code,
    String message,
    String reason,
    List<FieldViolation> fieldViolations,
    Optional<Duration> retryAfter) {

  /** A request field that broke a documented limit. */
  public record FieldViolation(String field, String description) {}

  /** The details of {@code error}, a StatusRuntimeException or StatusException of a call. */
  public static ErrorDetails of(Throwable error) {
    Status status = Status.fromThrowable(error);
    com.google.rpc.Status rich = StatusProto.fromThrowable(error);
    String reason = "";
    List<FieldViolation> violations = new ArrayList<>();
    Optional<Duration> retryAfter = Optional.empty();
    if (rich != null) {
      for (Any detail : rich.getDetailsList()) {
        try {
          if (detail.is(ErrorInfo.class)) {
            reason = detail.unpack(ErrorInfo.class).getReason();
          } else if (detail.is(BadRequest.class)) {
            for (BadRequest.FieldViolation v : detail.unpack(BadRequest.class).getFieldViolationsList()) {
              violations.add(new FieldViolation(v.getField(), v.getDescription()));
            }
          } else if (detail.is(RetryInfo.class)) {
            com.google.protobuf.Duration delay = detail.unpack(RetryInfo.class).getRetryDelay();
            retryAfter = Optional.of(Duration.ofSeconds(delay.getSeconds(), delay.getNanos()));
          }
        } catch (InvalidProtocolBufferException malformed) {
          // A detail that does not parse is skipped: the status itself still stands.
        }
      }
    }
    String message = status.getDescription() == null ? "" : status.getDescription();
    return new ErrorDetails(status.getCode(), message, reason, List.copyOf(violations), retryAfter);
  }
}
