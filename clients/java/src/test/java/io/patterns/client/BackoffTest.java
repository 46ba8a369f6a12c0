package io.patterns.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.grpc.Status;
import java.time.Duration;
import java.util.List;
import org.junit.jupiter.api.Test;

class BackoffTest {
  private static final PatternsException DOWN = new PatternsException(Status.Code.UNAVAILABLE, "down");

  private static void assertWithin(Duration low, Duration high, Duration delay) {
    assertTrue(delay.compareTo(low) >= 0 && delay.compareTo(high) <= 0, delay + " not in [" + low + ", " + high + "]");
  }

  @Test
  void doublesFromATenthOfASecondToFiveWithJitter() {
    Subscription.Backoff backoff = new Subscription.Backoff();
    long ceiling = 100;
    for (int i = 0; i < 10; i++) {
      assertWithin(Duration.ofMillis(ceiling / 2), Duration.ofMillis(ceiling), backoff.after(DOWN));
      ceiling = Math.min(5_000, ceiling * 2);
    }
    assertEquals(5_000, ceiling);
    backoff.reset();
    assertWithin(Duration.ofMillis(50), Duration.ofMillis(100), backoff.after(DOWN));
  }

  @Test
  void waitsAtLeastWhatTheServerAsked() {
    PatternsException asked = new PatternsException(Status.Code.UNAVAILABLE, "shutting down", "SHUTTING_DOWN",
        List.of(), Duration.ofSeconds(2), null);
    assertWithin(Duration.ofSeconds(2), Duration.ofSeconds(2), new Subscription.Backoff().after(asked));
  }

  @Test
  void resubscribesAfterOutagesAndOverloadNotAfterAuthOrCancel() {
    assertTrue(Subscription.resumable(DOWN));
    assertTrue(Subscription.resumable(new PatternsException(Status.Code.RESOURCE_EXHAUSTED, "slow")));
    assertTrue(!Subscription.resumable(new PatternsException(Status.Code.UNAUTHENTICATED, "revoked")));
    assertTrue(!Subscription.resumable(new PatternsException(Status.Code.CANCELLED, "closed")));
  }
}
