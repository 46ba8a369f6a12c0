package io.patterns.client;

import com.google.protobuf.ByteString;
import io.patterns.cache.v1.CacheGrpc;
import io.patterns.cache.v1.DeleteRequest;
import io.patterns.cache.v1.GetManyRequest;
import io.patterns.cache.v1.GetOrLeaseRequest;
import io.patterns.cache.v1.GetOrLeaseResponse;
import io.patterns.cache.v1.GetRequest;
import io.patterns.cache.v1.GetResponse;
import io.patterns.cache.v1.InvalidatePrefixRequest;
import io.patterns.cache.v1.InvalidateTagsRequest;
import io.patterns.cache.v1.ReleaseLeaseRequest;
import io.patterns.cache.v1.SetRequest;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Arrays;
import java.util.Collection;
import java.util.List;
import java.util.Optional;
import java.util.function.Function;
import java.util.function.Supplier;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * {@code client.cache()}: values with expiry and tags, and cache-aside done right
 * ({@link #getOrCompute}).
 */
public final class Cache {
  private static final Logger LOG = Logger.getLogger(Cache.class.getName());
  /**
   * The value getOrCompute stores for "not found" when asked to (cacheMissesFor): a reader
   * of the key elsewhere (get, another language) sees these bytes. The same as Python's.
   */
  public static final byte[] MISSING = "\0patterns-client:not-found\0".getBytes(StandardCharsets.UTF_8);

  private final Calls calls;
  private final CacheGrpc.CacheBlockingStub stub;

  Cache(Calls calls) {
    this.calls = calls;
    this.stub = calls.prepare(CacheGrpc.newBlockingStub(calls.channel));
  }

  /** This service with another deadline per call. */
  public Cache withTimeout(Duration timeout) {
    return new Cache(calls.withTimeout(timeout));
  }

  /** A key's value and how long it has left. */
  public record Entry(byte[] value, Duration ttlRemaining) {
    /** The value as UTF-8 text. */
    public String text() {
      return new String(value, StandardCharsets.UTF_8);
    }
  }

  /** The key's value; empty on a miss. */
  public Optional<Entry> get(String key) {
    GetRequest request = GetRequest.newBuilder().setKey(key).build();
    GetResponse response = calls.unary(stub, s -> s.get(request));
    return response.getFound()
        ? Optional.of(new Entry(response.getValue().toByteArray(), Convert.duration(response.getTtlRemaining())))
        : Optional.empty();
  }

  /** The values of {@code keys}, in order (empty for a miss). */
  public List<Optional<Entry>> getMany(Collection<String> keys) {
    GetManyRequest request = GetManyRequest.newBuilder().addAllKeys(keys).build();
    return calls.unary(stub, s -> s.getMany(request)).getEntriesList().stream()
        .map(e -> e.getFound()
            ? Optional.of(new Entry(e.getValue().toByteArray(), Convert.duration(e.getTtlRemaining())))
            : Optional.<Entry>empty())
        .toList();
  }

  /** Store {@code value} for {@code ttl} (null: the server's default); whether it was stored. */
  public boolean set(String key, byte[] value, Duration ttl) {
    SetRequest.Builder request = SetRequest.newBuilder().setKey(key).setValue(ByteString.copyFrom(value));
    if (ttl != null) {
      request.setTtl(Convert.duration(ttl));
    }
    return set(request.build());
  }

  /** Set with every option of the contract (expire_at, tags, only_if_absent, lease_token); whether stored. */
  public boolean set(SetRequest request) {
    return calls.unary(stub, s -> s.set(request)).getStored();
  }

  /** Delete keys; how many held a value. */
  public long delete(String... keys) {
    DeleteRequest request = DeleteRequest.newBuilder().addAllKeys(List.of(keys)).build();
    return calls.unary(stub, s -> s.delete(request)).getDeleted();
  }

  /** Delete every entry that carries one of {@code tags} now; how many. */
  public long invalidateTags(String... tags) {
    InvalidateTagsRequest request = InvalidateTagsRequest.newBuilder().addAllTags(List.of(tags)).build();
    return calls.unary(stub, s -> s.invalidateTags(request)).getDeleted();
  }

  /** Delete every entry whose key starts with {@code prefix}; how many. */
  public long invalidatePrefix(String prefix) {
    InvalidatePrefixRequest request = InvalidatePrefixRequest.newBuilder().setPrefix(prefix).build();
    return calls.unary(stub, s -> s.invalidatePrefix(request)).getDeleted();
  }

  /** The raw GetOrLease: the value, or the lease to fill it, or "pending" (getOrCompute does it all). */
  public GetOrLeaseResponse getOrLease(GetOrLeaseRequest request) {
    return calls.unary(stub, s -> s.getOrLease(request));
  }

  /** Give a fill lease back unfilled, so that a waiter takes the next one at once; whether it was held. */
  public boolean releaseLease(String key, String leaseToken) {
    ReleaseLeaseRequest request = ReleaseLeaseRequest.newBuilder().setKey(key).setLeaseToken(leaseToken).build();
    return calls.unary(stub, s -> s.releaseLease(request)).getReleased();
  }

  /** {@link #getOrCompute(String, Supplier, FillOptions)} with the default options. */
  public byte[] getOrCompute(String key, Supplier<byte[]> compute) {
    return getOrCompute(key, compute, FillOptions.defaults());
  }

  /**
   * The value of {@code key}; on a miss, compute()'s, stored for {@code options.ttl()}.
   *
   * <p>Across the fleet one caller computes a cold key (it holds the key's fill lease for
   * leaseTtl at most) while the others wait up to waitFor for its value, then compute it
   * themselves without storing. If compute() throws, the lease is given back (ReleaseLease:
   * the next caller computes at once) and that same exception is rethrown.
   *
   * <p>The cache costs fallbackAfter (200 ms) at most, all its calls together, plus waitFor
   * when the server said another caller is filling the key: when it cannot answer within
   * that (the server or its Redis unavailable, paused or overloaded, or no connection),
   * compute() is called directly. compute() may return null for "not found": null is
   * returned, and with cacheMissesFor the miss is cached for that long (as {@link #MISSING}).
   */
  public byte[] getOrCompute(String key, Supplier<byte[]> compute, FillOptions options) {
    Budget budget = new Budget(options.fallbackAfter());
    GetOrLeaseResponse response;
    try {
      // No wait in the first call: a paused server costs the budget only.
      response = budget.spend(left -> Calls.unary(stub, left, s -> s.getOrLease(leaseRequest(key, options, null))));
      if (response.hasPending() && !options.waitFor().isZero() && !options.waitFor().isNegative()) {
        budget.grow(options.waitFor());
        response = budget.spend(
            left -> Calls.unary(stub, left, s -> s.getOrLease(leaseRequest(key, options, options.waitFor()))));
      }
    } catch (PatternsException error) {
      if (!error.fallsBack()) {
        throw error;
      }
      LOG.log(Level.WARNING, "cache unavailable, computing {0} directly: {1}", new Object[] {key, error.getMessage()});
      return compute.get();
    }
    if (response.hasHit()) {
      byte[] value = response.getHit().getValue().toByteArray();
      return options.cacheMissesFor() != null && Arrays.equals(value, MISSING) ? null : value;
    }
    if (!response.hasLease()) {
      return compute.get(); // another caller still fills it: ours is not stored
    }
    String token = response.getLease().getToken();
    byte[] computed;
    try {
      computed = compute.get();
    } catch (RuntimeException | Error failure) {
      giveBack(key, token, budget);
      throw failure;
    }
    if (computed == null && options.cacheMissesFor() == null) {
      giveBack(key, token, budget); // nothing to store: the next caller computes
      return null;
    }
    SetRequest.Builder store = SetRequest.newBuilder().setKey(key).setLeaseToken(token).addAllTags(options.tags());
    if (computed == null) {
      store.setValue(ByteString.copyFrom(MISSING)).setTtl(Convert.duration(options.cacheMissesFor()));
    } else {
      store.setValue(ByteString.copyFrom(computed));
      if (options.ttl() != null) {
        store.setTtl(Convert.duration(options.ttl()));
      }
    }
    try {
      budget.spend(left -> Calls.unary(stub, left, s -> s.set(store.build())));
    } catch (PatternsException error) {
      if (!error.fallsBack()) {
        giveBack(key, token, budget);
        throw error;
      }
      LOG.log(Level.WARNING, "cache unavailable, {0} not stored: {1}", new Object[] {key, error.getMessage()});
    }
    return computed;
  }

  private static GetOrLeaseRequest leaseRequest(String key, FillOptions options, Duration wait) {
    GetOrLeaseRequest.Builder request = GetOrLeaseRequest.newBuilder()
        .setKey(key).setLeaseTtl(Convert.duration(options.leaseTtl()));
    if (wait != null) {
      request.setWaitTimeout(Convert.duration(wait));
    }
    return request.build();
  }

  /** Release the fill lease, so a waiter takes the next at once; if the cache cannot, it ends after leaseTtl. */
  private void giveBack(String key, String token, Budget budget) {
    ReleaseLeaseRequest request = ReleaseLeaseRequest.newBuilder().setKey(key).setLeaseToken(token).build();
    try {
      budget.spend(left -> Calls.unary(stub, left, s -> s.releaseLease(request)));
    } catch (PatternsException error) {
      LOG.log(Level.WARNING, "lease on {0} not given back (it ends after its leaseTtl): {1}",
          new Object[] {key, error.getMessage()});
    }
  }

  /**
   * The time a recipe may spend on the server's calls before it falls back: spent only
   * while a call is in progress, not while the caller's compute() runs.
   */
  static final class Budget {
    private long leftNanos;

    Budget(Duration budget) {
      this.leftNanos = budget.toNanos();
    }

    void grow(Duration more) {
      leftNanos += more.toNanos();
    }

    /** {@code call} with what is left as its deadline; what it took is counted, however it ends. */
    <T> T spend(Function<Duration, T> call) {
      long started = System.nanoTime();
      try {
        return call.apply(Duration.ofNanos(Math.max(leftNanos, 0)));
      } finally {
        leftNanos -= System.nanoTime() - started;
      }
    }
  }
}
