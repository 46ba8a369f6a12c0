package io.patterns.client;

import com.google.protobuf.Timestamp;
import java.time.Duration;
import java.time.Instant;

/** java.time to and from the contract's google.protobuf types. */
final class Convert {
  private Convert() {}

  static com.google.protobuf.Duration duration(Duration length) {
    return com.google.protobuf.Duration.newBuilder()
        .setSeconds(length.getSeconds())
        .setNanos(length.getNano())
        .build();
  }

  static Duration duration(com.google.protobuf.Duration length) {
    return Duration.ofSeconds(length.getSeconds(), length.getNanos());
  }

  static Timestamp timestamp(Instant instant) {
    return Timestamp.newBuilder()
        .setSeconds(instant.getEpochSecond())
        .setNanos(instant.getNano())
        .build();
  }

  static Instant instant(Timestamp timestamp) {
    return Instant.ofEpochSecond(timestamp.getSeconds(), timestamp.getNanos());
  }

  /** {@code value}, refused when null (a required argument). */
  static <T> T required(T value, String name) {
    if (value == null) {
      throw new NullPointerException(name + " is required");
    }
    return value;
  }
}
