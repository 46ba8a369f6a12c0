package io.patterns.client;

import io.grpc.Status;
import io.patterns.lock.v1.AcquireRequest;
import io.patterns.lock.v1.AcquireResponse;
import io.patterns.lock.v1.ExtendRequest;
import io.patterns.lock.v1.ExtendResponse;
import io.patterns.lock.v1.ForceReleaseRequest;
import io.patterns.lock.v1.HoldRequest;
import io.patterns.lock.v1.HoldResponse;
import io.patterns.lock.v1.InspectRequest;
import io.patterns.lock.v1.InspectResponse;
import io.patterns.lock.v1.LockerGrpc;
import io.patterns.lock.v1.ReleaseRequest;
import io.patterns.lock.v1.ReleaseStatus;
import java.time.Duration;
import java.time.Instant;
import java.util.Optional;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * {@code client.locks()}: leases with fencing tokens, and a lock held for a block of work:
 *
 * <pre>{@code
 * try (HeldLock held = client.locks().hold("report:daily", Duration.ofSeconds(10))) {
 *   store.write(rows, held.fencingToken()); // the storage refuses tokens older than the last
 *   if (held.isLost()) { ... }              // force-released, or Redis gone past the ttl
 * }                                           // released here
 * }</pre>
 */
public final class Locks {
  private final Calls calls;
  private final LockerGrpc.LockerBlockingStub stub;

  Locks(Calls calls) {
    this.calls = calls;
    this.stub = calls.prepare(LockerGrpc.newBlockingStub(calls.channel));
  }

  /** This service with another deadline per call. */
  public Locks withTimeout(Duration timeout) {
    return new Locks(calls.withTimeout(timeout));
  }

  /**
   * A granted lease: {@code token} proves it (keep it secret), {@code fencingToken} is greater
   * than every earlier grant's of the name, {@code expiresAt} its end unless extended or released.
   */
  public record Lease(String name, String token, long fencingToken, Instant expiresAt) {}

  /** What Inspect says of a lock (never its token). */
  public record LockState(boolean held, long fencingToken, Duration ttlRemaining) {}

  /** The lock for {@code ttl}, if free now; empty when another holds it. */
  public Optional<Lease> acquire(String name, Duration ttl) {
    return acquire(name, ttl, Duration.ZERO);
  }

  /** The lock for {@code ttl}, waiting up to {@code wait} for it; empty when not granted. */
  public Optional<Lease> acquire(String name, Duration ttl, Duration wait) {
    AcquireRequest request = AcquireRequest.newBuilder()
        .setName(name).setTtl(Convert.duration(ttl)).setWaitTimeout(Convert.duration(wait)).build();
    AcquireResponse response = Calls.unary(stub, calls.timeout.plus(wait), s -> s.acquire(request));
    return response.getAcquired()
        ? Optional.of(new Lease(name, response.getToken(), response.getFencingToken(),
            Convert.instant(response.getExpiresAt())))
        : Optional.empty();
  }

  /** Give the lock up, if the lease still holds it: RELEASED, NOT_HELD or HELD_BY_OTHER. */
  public ReleaseStatus release(Lease lease) {
    ReleaseRequest request = ReleaseRequest.newBuilder().setName(lease.name()).setToken(lease.token()).build();
    return calls.unary(stub, s -> s.release(request)).getStatus();
  }

  /** The lease with {@code ttl} left from now; empty when it no longer holds the lock. */
  public Optional<Lease> extend(Lease lease, Duration ttl) {
    ExtendRequest request = ExtendRequest.newBuilder()
        .setName(lease.name()).setToken(lease.token()).setTtl(Convert.duration(ttl)).build();
    ExtendResponse response = calls.unary(stub, s -> s.extend(request));
    return response.getExtended()
        ? Optional.of(new Lease(lease.name(), lease.token(), lease.fencingToken(),
            Convert.instant(response.getExpiresAt())))
        : Optional.empty();
  }

  /** Whether the lock is held, its fencing token and time left. */
  public LockState inspect(String name) {
    InspectRequest request = InspectRequest.newBuilder().setName(name).build();
    InspectResponse response = calls.unary(stub, s -> s.inspect(request));
    return new LockState(response.getHeld(), response.getFencingToken(), Convert.duration(response.getTtlRemaining()));
  }

  /** End whoever's lease on the name (an operator's tool); whether there was one. */
  public boolean forceRelease(String name) {
    ForceReleaseRequest request = ForceReleaseRequest.newBuilder().setName(name).build();
    return calls.unary(stub, s -> s.forceRelease(request)).getReleased();
  }

  /** {@link #hold(String, Duration, Duration)} without waiting: the lock must be free now. */
  public HeldLock hold(String name, Duration ttl) {
    return hold(name, ttl, Duration.ZERO);
  }

  /**
   * Hold the lock until the returned HeldLock is closed (try-with-resources), waiting up to
   * {@code wait} for it, over one Hold stream: the server renews the lease every ttl/3 while
   * the stream lasts and releases it when the stream ends, whether the block ends, throws,
   * or the process dies. Throws {@link LockNotAcquiredException} when another kept it for
   * the whole wait, DEADLINE_EXCEEDED when the server gave no first answer within the
   * client's timeout plus the wait.
   */
  public HeldLock hold(String name, Duration ttl, Duration wait) {
    HoldRequest request = HoldRequest.newBuilder()
        .setName(name).setTtl(Convert.duration(ttl)).setWaitTimeout(Convert.duration(wait)).build();
    // The stream has no deadline (it lasts as long as the block), but its first answer does.
    Duration patience = calls.timeout.plus(wait);
    HeldLock.Watch watch = new HeldLock.Watch();
    calls.prepare(LockerGrpc.newStub(calls.channel)).hold(request, watch);
    HoldResponse first;
    try {
      first = watch.first.get(patience.toNanos(), TimeUnit.NANOSECONDS);
    } catch (TimeoutException e) {
      watch.end();
      throw new PatternsException(Status.Code.DEADLINE_EXCEEDED,
          "Hold gave no first answer within " + patience.toMillis() + " ms");
    } catch (ExecutionException e) {
      watch.end();
      throw PatternsException.from(e.getCause());
    } catch (InterruptedException e) {
      watch.end(); // the server must not keep the lock for a caller that gave up
      Thread.currentThread().interrupt();
      throw new PatternsException(Status.Code.CANCELLED, "interrupted while waiting for the lock");
    }
    if (!first.hasAcquired()) {
      watch.end();
      throw new LockNotAcquiredException(name);
    }
    return new HeldLock(name, first.getAcquired().getToken(), first.getAcquired().getFencingToken(), watch);
  }
}
