package io.patterns.client;

import java.time.Duration;
import java.util.List;

/**
 * The options of {@link Cache#getOrCompute(String, java.util.function.Supplier, FillOptions)}:
 * the value's {@code ttl} (null: the server's default) and {@code tags}; {@code leaseTtl}
 * (10 s), the longest one caller may fill the key; {@code waitFor} (5 s), how long others wait
 * for that fill; {@code fallbackAfter} (200 ms), the budget of the cache's calls before
 * compute() answers directly; {@code cacheMissesFor} (null: never), how long a null from
 * compute() is cached. Each method returns a changed copy: {@code FillOptions.defaults().ttl(...)}.
 */
public record FillOptions(Duration ttl, List<String> tags, Duration leaseTtl, Duration waitFor,
    Duration fallbackAfter, Duration cacheMissesFor) {
  public FillOptions {
    tags = List.copyOf(tags);
    Calls.positive(leaseTtl, "leaseTtl");
    Convert.required(waitFor, "waitFor");
    Calls.positive(fallbackAfter, "fallbackAfter");
  }

  public static FillOptions defaults() {
    return new FillOptions(null, List.of(), Duration.ofSeconds(10), Duration.ofSeconds(5),
        CheckOptions.FALLBACK_AFTER, null);
  }

  public FillOptions ttl(Duration ttl) {
    return new FillOptions(ttl, tags, leaseTtl, waitFor, fallbackAfter, cacheMissesFor);
  }

  public FillOptions tags(String... tags) {
    return new FillOptions(ttl, List.of(tags), leaseTtl, waitFor, fallbackAfter, cacheMissesFor);
  }

  public FillOptions leaseTtl(Duration leaseTtl) {
    return new FillOptions(ttl, tags, leaseTtl, waitFor, fallbackAfter, cacheMissesFor);
  }

  public FillOptions waitFor(Duration waitFor) {
    return new FillOptions(ttl, tags, leaseTtl, waitFor, fallbackAfter, cacheMissesFor);
  }

  public FillOptions fallbackAfter(Duration fallbackAfter) {
    return new FillOptions(ttl, tags, leaseTtl, waitFor, fallbackAfter, cacheMissesFor);
  }

  public FillOptions cacheMissesFor(Duration cacheMissesFor) {
    return new FillOptions(ttl, tags, leaseTtl, waitFor, fallbackAfter, cacheMissesFor);
  }
}
