package io.patterns.client;

import io.patterns.counter.v1.AddRequest;
import io.patterns.counter.v1.CountRequest;
import io.patterns.counter.v1.MergeRequest;
import io.patterns.counter.v1.UniqueCounterGrpc;
import java.time.Duration;
import java.util.Collection;
import java.util.List;

/** {@code client.counter()}: how many distinct items, estimated (HyperLogLog, ~0.81 % error). */
public final class UniqueCounter {
  private final Calls calls;
  private final UniqueCounterGrpc.UniqueCounterBlockingStub stub;

  UniqueCounter(Calls calls) {
    this.calls = calls;
    this.stub = calls.prepare(UniqueCounterGrpc.newBlockingStub(calls.channel));
  }

  /** This service with another deadline per call. */
  public UniqueCounter withTimeout(Duration timeout) {
    return new UniqueCounter(calls.withTimeout(timeout));
  }

  /** Record {@code items} under {@code key}; whether the estimate moved. */
  public boolean add(String key, String... items) {
    return add(key, List.of(items), null);
  }

  /** Record {@code items}; the key then expires {@code ttl} after this call (null: it keeps its expiry). */
  public boolean add(String key, Collection<String> items, Duration ttl) {
    AddRequest.Builder request = AddRequest.newBuilder().setKey(key).addAllItems(items);
    if (ttl != null) {
      request.setTtl(Convert.duration(ttl));
    }
    return calls.unary(stub, s -> s.add(request.build())).getChanged();
  }

  /** The estimated number of distinct items in the union of {@code keys}. */
  public long count(String... keys) {
    CountRequest request = CountRequest.newBuilder().addAllKeys(List.of(keys)).build();
    return calls.unary(stub, s -> s.count(request)).getCount();
  }

  /** Store the union of {@code sources} into {@code destination} (for {@code ttl}, when not null); its count. */
  public long merge(String destination, Collection<String> sources, Duration ttl) {
    MergeRequest.Builder request = MergeRequest.newBuilder().setDestination(destination).addAllSources(sources);
    if (ttl != null) {
      request.setTtl(Convert.duration(ttl));
    }
    return calls.unary(stub, s -> s.merge(request.build())).getCount();
  }
}
