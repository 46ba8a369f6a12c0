package io.patterns.client;

import io.grpc.Channel;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import io.patterns.events.v1.EventsGrpc;
import io.patterns.events.v1.SubscribeRequest;
import io.patterns.events.v1.SubscribeResponse;
import java.time.Duration;
import java.util.Iterator;
import java.util.List;
import java.util.NoSuchElementException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;

/**
 * A subscription of {@link Events#subscribe}: a blocking iterator of {@link Events.Event}s
 * and {@link Events.Gap}s, for one reader; {@link #close()} (or leaving its try block) ends it.
 *
 * <p>When its stream fails in a way that a new subscription cures (UNAVAILABLE: the server
 * or its Redis unavailable or stopping, a cut connection; RESOURCE_EXHAUSTED: the server or
 * tenant at its limit of streams, or this reader too slow; the server ending the stream), it
 * subscribes again after a backoff, doubling from 0.1 s to 5 s with jitter, at least the
 * server's RetryInfo, and once the server confirms, yields a Gap. Other failures (a revoked
 * key, say) end it: {@link #hasNext()} throws that PatternsException.
 *
 * <p>Messages are asked for one at a time as the reader takes them (gRPC flow control), so a
 * slow reader holds up its stream rather than memory; the server then ends a stream that
 * stays too far behind (SLOW_CONSUMER), which reads as a Gap.
 */
public final class Subscription implements Iterator<Events.Item>, Iterable<Events.Item>, AutoCloseable {
  static final Duration FIRST_BACKOFF = Duration.ofMillis(100);
  static final Duration LAST_BACKOFF = Duration.ofSeconds(5);

  private final EventsGrpc.EventsStub stub;
  private final SubscribeRequest request;
  private final Channel channel;
  private final Object lock = new Object();
  // What the reader takes: an Item (with the stream to ask more of once it is taken), or End.
  private final LinkedBlockingQueue<Object> queue = new LinkedBlockingQueue<>();
  private final Backoff backoff = new Backoff();

  // Guarded by lock.
  private ClientCallStreamObserver<SubscribeRequest> call;
  private int attempt;
  private boolean subscribed;
  private boolean closed;
  private PatternsException interrupted; // what interrupted the stream, until the Gap is queued
  private PatternsException failure; // what ended the subscription

  // The reader's own.
  private Events.Item next;
  private End end;

  private record Queued(Events.Item item, ClientCallStreamObserver<SubscribeRequest> askMore) {}

  private record End(PatternsException failure) {}

  Subscription(EventsGrpc.EventsStub stub, SubscribeRequest request, Channel channel) {
    this.stub = stub;
    this.request = request;
    this.channel = channel;
    open();
  }

  /**
   * Wait until the server has confirmed the subscription: every event published after this
   * returns reaches it. Consumes no item. Throws DEADLINE_EXCEEDED when no confirmation came
   * within {@code timeout} (the subscription goes on trying), the failure that ended the
   * subscription, or CANCELLED when it is closed.
   */
  public void awaitSubscribed(Duration timeout) {
    long deadline = System.nanoTime() + timeout.toNanos();
    synchronized (lock) {
      while (!subscribed) {
        if (failure != null) {
          throw failure;
        }
        if (closed) {
          throw new PatternsException(Status.Code.CANCELLED, "the subscription is closed");
        }
        long left = deadline - System.nanoTime();
        if (left <= 0) {
          throw new PatternsException(Status.Code.DEADLINE_EXCEEDED,
              "the server did not confirm the subscription within " + timeout.toMillis() + " ms");
        }
        try {
          TimeUnit.NANOSECONDS.timedWait(lock, left);
        } catch (InterruptedException e) {
          Thread.currentThread().interrupt();
          throw new PatternsException(Status.Code.CANCELLED, "interrupted while waiting for the subscription");
        }
      }
    }
  }

  /** Whether the server confirms the subscription now (false while it resubscribes). */
  public boolean isSubscribed() {
    synchronized (lock) {
      return subscribed;
    }
  }

  /** This subscription, for a for-each loop (one reader: it is its own iterator). */
  @Override
  public Iterator<Events.Item> iterator() {
    return this;
  }

  /**
   * Waits for the next item: true when there is one; false once closed; throws the failure
   * that ended the subscription.
   */
  @Override
  public boolean hasNext() {
    while (next == null) {
      if (end != null) {
        return finish();
      }
      try {
        take(queue.take());
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw new PatternsException(Status.Code.CANCELLED, "interrupted while waiting for an event");
      }
    }
    return true;
  }

  @Override
  public Events.Item next() {
    if (!hasNext()) {
      throw new NoSuchElementException("the subscription is closed");
    }
    Events.Item item = next;
    next = null;
    return item;
  }

  /**
   * The next item within {@code timeout}; null when none came by then, or once closed.
   * Throws the failure that ended the subscription.
   */
  public Events.Item poll(Duration timeout) {
    long deadline = System.nanoTime() + timeout.toNanos();
    while (next == null) {
      if (end != null) {
        finish();
        return null;
      }
      try {
        Object taken = queue.poll(Math.max(deadline - System.nanoTime(), 0), TimeUnit.NANOSECONDS);
        if (taken == null) {
          return null;
        }
        take(taken);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw new PatternsException(Status.Code.CANCELLED, "interrupted while waiting for an event");
      }
    }
    return next();
  }

  /**
   * The listener form: every item is handed to {@code listener} on a thread of this
   * subscription's own (daemon), in order, until it ends. The future completes when it
   * does: normally once closed; exceptionally with the failure that ended it, or with what
   * the listener threw (which closes the subscription). Then do not iterate it yourself.
   */
  public CompletableFuture<Void> listen(Consumer<? super Events.Item> listener) {
    CompletableFuture<Void> ended = new CompletableFuture<>();
    Thread reader = new Thread(() -> {
      try {
        while (hasNext()) {
          listener.accept(next());
        }
        ended.complete(null);
      } catch (Throwable failure) {
        close();
        ended.completeExceptionally(failure);
      }
    }, "patterns-subscription");
    reader.setDaemon(true);
    reader.start();
    return ended;
  }

  /** End the subscription: its stream is cancelled, and a reader waiting is told there is no more. */
  @Override
  public void close() {
    synchronized (lock) {
      if (closed) {
        return;
      }
      closed = true;
      subscribed = false;
      if (call != null) {
        call.cancel("the subscription was closed", null);
      }
      queue.clear();
      queue.add(new End(null));
      lock.notifyAll();
    }
  }

  private void take(Object taken) {
    if (taken instanceof Queued queued) {
      next = queued.item();
      if (queued.askMore() != null) {
        queued.askMore().request(1); // the last item of its message: the stream may send another
      }
    } else {
      end = (End) taken;
    }
  }

  private boolean finish() {
    if (end.failure() != null) {
      throw end.failure();
    }
    return false;
  }

  /** Open a stream (the first, or after a backoff), unless closed meanwhile. */
  private void open() {
    synchronized (lock) {
      if (closed) {
        return;
      }
      attempt++;
      stub.subscribe(request, new Stream(attempt));
    }
  }

  /** One stream's callbacks; a stream that is not the current one is ignored. */
  private final class Stream implements ClientResponseObserver<SubscribeRequest, SubscribeResponse> {
    private final int mine;
    private ClientCallStreamObserver<SubscribeRequest> stream;

    Stream(int mine) {
      this.mine = mine;
    }

    @Override
    public void beforeStart(ClientCallStreamObserver<SubscribeRequest> stream) {
      this.stream = stream;
      stream.disableAutoRequestWithInitial(1);
      call = stream; // called within open(), under the lock
    }

    @Override
    public void onNext(SubscribeResponse response) {
      synchronized (lock) {
        if (closed || attempt != mine) {
          return;
        }
        if (response.hasSubscribed()) {
          subscribed = true;
          backoff.reset();
          lock.notifyAll();
          if (interrupted != null) {
            queue.add(new Queued(new Events.Gap(interrupted), null));
            interrupted = null;
          }
          stream.request(1);
          return;
        }
        // A batch's events, or one event (a server older than SubscribeRequest.batch).
        List<io.patterns.events.v1.Event> events = response.hasBatch()
            ? response.getBatch().getEventsList() : List.of(response.getEvent());
        if (events.isEmpty()) {
          stream.request(1);
        }
        for (int i = 0; i < events.size(); i++) {
          io.patterns.events.v1.Event event = events.get(i);
          Events.Event item = new Events.Event(event.getChannel(), event.getPattern(),
              event.getPayload().toByteArray(), Convert.instant(event.getReceivedAt()));
          queue.add(new Queued(item, i == events.size() - 1 ? stream : null));
        }
      }
    }

    @Override
    public void onError(Throwable error) {
      failed(PatternsException.from(error));
    }

    @Override
    public void onCompleted() {
      failed(new PatternsException(Status.Code.UNAVAILABLE, "the server ended the subscription"));
    }

    private void failed(PatternsException error) {
      synchronized (lock) {
        if (closed || attempt != mine) {
          return;
        }
        subscribed = false;
        boolean shutDown = channel instanceof ManagedChannel managed && managed.isShutdown();
        if (!resumable(error) || shutDown) {
          failure = error;
          queue.add(new End(error));
          lock.notifyAll();
          return;
        }
        if (interrupted == null) {
          interrupted = error;
        }
        Duration delay = backoff.after(error);
        CompletableFuture.delayedExecutor(delay.toNanos(), TimeUnit.NANOSECONDS).execute(Subscription.this::open);
      }
    }
  }

  /**
   * Failures a new subscription cures: the server or Redis unavailable or stopping (a cut
   * connection reads as UNAVAILABLE too), the server or tenant at its limit of streams or
   * the reader too slow (RESOURCE_EXHAUSTED). Not CANCELLED: this client closing. Not
   * UNAUTHENTICATED: a revoked key stays revoked, and trying again would be a loop.
   */
  static boolean resumable(PatternsException error) {
    return error.code() == Status.Code.UNAVAILABLE || error.code() == Status.Code.RESOURCE_EXHAUSTED;
  }

  /** Waits between attempts: doubling from 0.1 s to 5 s, with jitter, at least what the server asked. */
  static final class Backoff {
    private long nextNanos = FIRST_BACKOFF.toNanos();

    void reset() {
      nextNanos = FIRST_BACKOFF.toNanos();
    }

    Duration after(PatternsException error) {
      long delay = (long) (nextNanos * ThreadLocalRandom.current().nextDouble(0.5, 1.0));
      if (error.retryAfter().isPresent()) {
        delay = Math.max(delay, error.retryAfter().get().toNanos());
      }
      nextNanos = Math.min(LAST_BACKOFF.toNanos(), nextNanos * 2);
      return Duration.ofNanos(delay);
    }
  }
}
