package io.patterns.client;

import io.grpc.Status;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import io.patterns.lock.v1.HoldRequest;
import io.patterns.lock.v1.HoldResponse;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;

/**
 * A lock held by {@link Locks#hold} until {@link #close()}, which releases it (the Hold
 * stream ends, and the server lets go). If the lease is lost before (force-released, or
 * Redis unreachable past the ttl), {@link #isLost()} turns true and {@link #lost()}
 * completes: a holder doing long work should check it, and always pass
 * {@link #fencingToken()} to what it protects. Closing after a loss does not throw.
 */
public final class HeldLock implements AutoCloseable {
  private final String name;
  private final String token;
  private final long fencingToken;
  private final Watch watch;

  HeldLock(String name, String token, long fencingToken, Watch watch) {
    this.name = name;
    this.token = token;
    this.fencingToken = fencingToken;
    this.watch = watch;
  }

  public String name() {
    return name;
  }

  /** The lease's token (keep it secret). */
  public String token() {
    return token;
  }

  /** Greater than every earlier grant's of the name: pass it to what the lock protects. */
  public long fencingToken() {
    return fencingToken;
  }

  /** Whether the lease was lost while held. */
  public boolean isLost() {
    return watch.lost.isDone();
  }

  /**
   * Completes when the lease is lost while held (never, if it is not): {@code lost().get(...)}
   * to wait for it, {@code lost().thenRun(...)} to act on it. Each call returns a new future.
   */
  public CompletableFuture<Void> lost() {
    return watch.lost.copy();
  }

  /** Why the lease was lost, when the server said (ABORTED LEASE_LOST, UNAVAILABLE, ...). */
  public Optional<PatternsException> lossCause() {
    return Optional.ofNullable(watch.cause);
  }

  /** Release the lock: the Hold stream ends, and the server lets go of the lease. */
  @Override
  public void close() {
    watch.end();
  }

  @Override
  public String toString() {
    return "HeldLock(" + name + ", fencingToken=" + fencingToken + (isLost() ? ", lost" : "") + ")";
  }

  /** Reads the Hold stream: its first answer, then whether the lease was lost. */
  static final class Watch implements ClientResponseObserver<HoldRequest, HoldResponse> {
    final CompletableFuture<HoldResponse> first = new CompletableFuture<>();
    final CompletableFuture<Void> lost = new CompletableFuture<>();
    volatile PatternsException cause;
    private volatile boolean ended;
    private volatile ClientCallStreamObserver<HoldRequest> call;

    @Override
    public void beforeStart(ClientCallStreamObserver<HoldRequest> call) {
      this.call = call;
    }

    @Override
    public void onNext(HoldResponse response) {
      // Only `lost` can follow `acquired`; the error that ends the stream then says why.
      if (!first.complete(response) && response.hasLost()) {
        lost.complete(null);
      }
    }

    @Override
    public void onError(Throwable error) {
      if (first.completeExceptionally(error) || ended) {
        return; // no lock yet, or our own cancel
      }
      if (Status.fromThrowable(error).getCode() != Status.Code.CANCELLED) {
        cause = PatternsException.from(error);
      }
      lost.complete(null);
    }

    @Override
    public void onCompleted() {
      if (first.completeExceptionally(new PatternsException(Status.Code.INTERNAL,
          "the Hold stream ended without an answer"))) {
        return;
      }
      if (!ended) {
        lost.complete(null); // the server let go of the lease: no longer held
      }
    }

    /** Cancel the stream: the server releases the lease. */
    void end() {
      ended = true;
      call.cancel("the lock's holder is done", null);
    }
  }
}
