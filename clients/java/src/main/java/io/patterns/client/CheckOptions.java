package io.patterns.client;

import java.time.Duration;

/**
 * The options of {@link RateLimiter#check(String, Policy, CheckOptions)}: the units the check
 * costs (1), whether it only peeks (consumes nothing), what it answers when the server cannot
 * ({@link OnUnavailable#RAISE}), and its budget then ({@code fallbackAfter}, 200 ms). Each
 * method returns a changed copy: {@code CheckOptions.failOpen().cost(5)}.
 */
public record CheckOptions(int cost, boolean peek, OnUnavailable onUnavailable, Duration fallbackAfter) {
  /** How long a recipe with a fallback waits for the server before it falls back. */
  public static final Duration FALLBACK_AFTER = Duration.ofMillis(200);

  public CheckOptions {
    Convert.required(onUnavailable, "onUnavailable");
    Calls.positive(fallbackAfter, "fallbackAfter");
  }

  /** Cost 1, no peek, RAISE. */
  public static CheckOptions defaults() {
    return new CheckOptions(1, false, OnUnavailable.RAISE, FALLBACK_AFTER);
  }

  /** Admit when the server cannot answer within 200 ms. */
  public static CheckOptions failOpen() {
    return defaults().onUnavailable(OnUnavailable.ALLOW);
  }

  /** Refuse when the server cannot answer within 200 ms. */
  public static CheckOptions failClosed() {
    return defaults().onUnavailable(OnUnavailable.DENY);
  }

  public CheckOptions cost(int cost) {
    return new CheckOptions(cost, peek, onUnavailable, fallbackAfter);
  }

  public CheckOptions peek(boolean peek) {
    return new CheckOptions(cost, peek, onUnavailable, fallbackAfter);
  }

  public CheckOptions onUnavailable(OnUnavailable onUnavailable) {
    return new CheckOptions(cost, peek, onUnavailable, fallbackAfter);
  }

  public CheckOptions fallbackAfter(Duration fallbackAfter) {
    return new CheckOptions(cost, peek, onUnavailable, fallbackAfter);
  }
}
