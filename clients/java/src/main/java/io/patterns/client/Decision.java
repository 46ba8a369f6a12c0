package io.patterns.client;

import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.Map;

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

  /** retryAfter in whole seconds, rounded up, at least 1 when refused (0 when allowed): HTTP's Retry-After. */
  public long retryAfterSeconds() {
    return allowed ? 0 : Math.max(1, wholeSeconds(retryAfter));
  }

  /** resetAfter in whole seconds, rounded up, at least 1 when refused. */
  public long resetSeconds() {
    long reset = wholeSeconds(resetAfter);
    return allowed ? reset : Math.max(Math.max(1, reset), retryAfterSeconds());
  }

  /**
   * The IETF rate-limit headers of this answer (draft-ietf-httpapi-ratelimit-headers), as
   * the Python client's: RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset (seconds,
   * rounded up), RateLimit-Policy ({@code <limit>;w=<period in seconds>}, with
   * {@code ;burst=<burst>} for a bucket that has one) and, when refused, Retry-After.
   */
  public Map<String, String> headers() {
    Map<String, String> headers = new LinkedHashMap<>();
    headers.put("RateLimit-Limit", String.valueOf(limit));
    headers.put("RateLimit-Remaining", String.valueOf(remaining));
    headers.put("RateLimit-Reset", String.valueOf(resetSeconds()));
    if (policy != null) {
      String described = policy.limit() + ";w=" + wholeSeconds(policy.period());
      headers.put("RateLimit-Policy", policy.burst() != 0 ? described + ";burst=" + policy.burst() : described);
    }
    if (!allowed) {
      headers.put("Retry-After", String.valueOf(retryAfterSeconds()));
    }
    return headers;
  }

  private static long wholeSeconds(Duration length) {
    return length.getSeconds() + (length.getNano() > 0 ? 1 : 0);
  }
}
