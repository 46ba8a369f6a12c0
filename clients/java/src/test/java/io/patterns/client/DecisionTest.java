package io.patterns.client;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.time.Duration;
import java.util.Map;
import org.junit.jupiter.api.Test;

class DecisionTest {
  @Test
  void anAdmittedAnswersHeadersWithoutRetryAfter() {
    Decision decision = new Decision(true, 100, 99, Duration.ofMillis(600), Duration.ZERO, false,
        Policy.gcra(100, Duration.ofMinutes(1)));
    assertEquals(Map.of("RateLimit-Limit", "100", "RateLimit-Remaining", "99", "RateLimit-Reset", "1",
        "RateLimit-Policy", "100;w=60"), decision.headers());
    assertEquals(0, decision.retryAfterSeconds());
  }

  @Test
  void aRefusalRoundsItsWaitsUp() {
    Decision decision = new Decision(false, 10, 0, Duration.ofMillis(100), Duration.ofMillis(2_100), false,
        Policy.tokenBucket(5, Duration.ofSeconds(1), 10));
    assertEquals(3, decision.retryAfterSeconds());
    assertEquals(Map.of("RateLimit-Limit", "10", "RateLimit-Remaining", "0", "RateLimit-Reset", "3",
        "RateLimit-Policy", "5;w=1;burst=10", "Retry-After", "3"), decision.headers());
  }
}
