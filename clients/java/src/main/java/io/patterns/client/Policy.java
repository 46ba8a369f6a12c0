package io.patterns.client;

import io.patterns.ratelimit.v1.Algorithm;
import java.time.Duration;

/**
 * A rate limit: {@code limit} units per {@code period}, counted by {@code algorithm};
 * {@code burst} (buckets only) is the most admitted at once after a quiet spell (0: limit).
 */
public record Policy(Algorithm algorithm, long limit, Duration period, long burst) {
  public Policy {
    Convert.required(algorithm, "algorithm");
    Convert.required(period, "period");
  }

  /** Windows aligned on the clock; cheapest; up to 2x limit around a boundary. */
  public static Policy fixedWindow(long limit, Duration period) {
    return new Policy(Algorithm.ALGORITHM_FIXED_WINDOW, limit, period, 0);
  }

  /** Exact: at most limit in any period (limit at most 100,000). */
  public static Policy slidingWindowLog(long limit, Duration period) {
    return new Policy(Algorithm.ALGORITHM_SLIDING_WINDOW_LOG, limit, period, 0);
  }

  /** An approximate rolling window in constant memory. */
  public static Policy slidingWindowCounter(long limit, Duration period) {
    return new Policy(Algorithm.ALGORITHM_SLIDING_WINDOW_COUNTER, limit, period, 0);
  }

  /** A bucket of burst tokens (0: limit) refilled at limit per period. */
  public static Policy tokenBucket(long limit, Duration period, long burst) {
    return new Policy(Algorithm.ALGORITHM_TOKEN_BUCKET, limit, period, burst);
  }

  /** The token bucket's decisions, stored as one timestamp per key. */
  public static Policy gcra(long limit, Duration period) {
    return gcra(limit, period, 0);
  }

  /** GCRA admitting up to burst (0: limit) at once. */
  public static Policy gcra(long limit, Duration period, long burst) {
    return new Policy(Algorithm.ALGORITHM_GCRA, limit, period, burst);
  }

  /** The most this policy admits at once: burst, else limit. */
  public long capacity() {
    return burst != 0 ? burst : limit;
  }

  io.patterns.ratelimit.v1.Policy message() {
    return io.patterns.ratelimit.v1.Policy.newBuilder()
        .setAlgorithm(algorithm)
        .setLimit(limit)
        .setPeriod(Convert.duration(period))
        .setBurst(burst)
        .build();
  }
}
