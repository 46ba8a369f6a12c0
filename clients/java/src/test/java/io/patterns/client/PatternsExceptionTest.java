package io.patterns.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.Any;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import com.google.rpc.RetryInfo;
import io.grpc.Status;
import io.grpc.protobuf.StatusProto;
import java.time.Duration;
import java.util.List;
import java.util.Optional;
import org.junit.jupiter.api.Test;

class PatternsExceptionTest {
  /** A failure as the server sends it: a status with ErrorInfo, BadRequest and RetryInfo details. */
  private static RuntimeException failure(int code, String reason, String field, Duration retry) {
    com.google.rpc.Status.Builder status = com.google.rpc.Status.newBuilder()
        .setCode(code).setMessage("what went wrong")
        .addDetails(Any.pack(ErrorInfo.newBuilder().setReason(reason).setDomain("patterns").build()));
    if (field != null) {
      status.addDetails(Any.pack(BadRequest.newBuilder().addFieldViolations(
          BadRequest.FieldViolation.newBuilder().setField(field).setDescription("must not be empty")).build()));
    }
    if (retry != null) {
      status.addDetails(Any.pack(RetryInfo.newBuilder().setRetryDelay(Convert.duration(retry)).build()));
    }
    return StatusProto.toStatusRuntimeException(status.build());
  }

  @Test
  void decodesTheRichDetails() {
    PatternsException e = PatternsException.from(
        failure(Status.Code.INVALID_ARGUMENT.value(), "INVALID_ARGUMENT", "key", null));
    assertEquals(Status.Code.INVALID_ARGUMENT, e.code());
    assertEquals("what went wrong", e.message());
    assertEquals("INVALID_ARGUMENT", e.reason());
    assertEquals(List.of(new ErrorDetails.FieldViolation("key", "must not be empty")), e.fieldViolations());
    assertEquals(Optional.empty(), e.retryAfter());
    assertEquals("INVALID_ARGUMENT: what went wrong", e.getMessage());
  }

  @Test
  void decodesRetryAfterAndNamesAReasonOtherThanTheCode() {
    PatternsException e = PatternsException.from(
        failure(Status.Code.UNAVAILABLE.value(), "REDIS_UNAVAILABLE", null, Duration.ofMillis(1500)));
    assertEquals(Optional.of(Duration.ofMillis(1500)), e.retryAfter());
    assertEquals("UNAVAILABLE (REDIS_UNAVAILABLE): what went wrong", e.getMessage());
  }

  @Test
  void aStatusWithoutDetailsHasNone() {
    PatternsException e = PatternsException.from(Status.DEADLINE_EXCEEDED.withDescription("late").asRuntimeException());
    assertEquals(Status.Code.DEADLINE_EXCEEDED, e.code());
    assertEquals("", e.reason());
    assertTrue(e.fieldViolations().isEmpty());
  }

  @Test
  void aPatternsExceptionIsItsOwnDecoding() {
    PatternsException e = new PatternsException(Status.Code.CANCELLED, "closed");
    assertSame(e, PatternsException.from(e));
  }

  @Test
  void fallsBackOnOutagesAndOverloadOnly() {
    assertTrue(PatternsException.from(failure(14, "REDIS_UNAVAILABLE", null, null)).fallsBack());
    assertTrue(PatternsException.from(failure(4, "", null, null)).fallsBack());
    assertTrue(PatternsException.from(failure(8, "OVERLOADED", null, null)).fallsBack());
    assertTrue(PatternsException.from(failure(8, "TENANT_OVERLOADED", null, null)).fallsBack());
    // What the caller must fix is never hidden by a fallback.
    assertFalse(PatternsException.from(failure(8, "SLOW_CONSUMER", null, null)).fallsBack());
    assertFalse(PatternsException.from(failure(3, "INVALID_ARGUMENT", "key", null)).fallsBack());
    assertFalse(PatternsException.from(failure(16, "INVALID_API_KEY", null, null)).fallsBack());
  }
}
