package io.patterns.client;

import java.time.Duration;

/**
 * A rate-limit check's answer. {@code limit} is the policy's capacity, {@code remaining} what
 * is left of it, {@code resetAfter} the time until it is whole again, {@code retryAfter}
 * (zero when allowed) the wait until the same cost would be admitted. {@code fallback} is
 * true when the answer is not the server's but the client's {@link OnUnavailable} choice,
 * the server having no answer within the budget: then {@code limit} is the policy's
 * capacity and {@code remaining} is capacity - cost when admitted, 0 when refused.
 */
public record Decision(
    boolean allowed,
    long limit,
    long remaining,
    Duration resetAfter,
    Duration retryAfter,
    boolean fallback,
    Policy policy) {

  /** retryAfter in whole seconds, rounded up, at least 1 when refused: HTTP's Retry-After. */
  public long retryAfterSeconds() {
    if (allowed) {
      return 0;
    }
    long seconds = retryAfter.getSeconds() + (retryAfter.getNano() > 0 ? 1 : 0);
    return Math.max(1, seconds);
  }
}
