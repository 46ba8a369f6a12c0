package io.patterns.client;

import io.grpc.CallCredentials;
import io.grpc.Channel;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.AbstractStub;
import io.grpc.stub.StreamObserver;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.function.BiConsumer;
import java.util.function.Function;

/**
 * How the services' methods make calls: the client's deadline on every unary call (a
 * deadline is an instant: set per call, never once on a shared stub), its API key on every
 * call and stream, and every failure thrown as a PatternsException.
 */
final class Calls {
  final Channel channel;
  final CallCredentials credentials;
  final Duration timeout;

  Calls(Channel channel, CallCredentials credentials, Duration timeout) {
    this.channel = channel;
    this.credentials = credentials;
    this.timeout = positive(timeout, "timeout");
  }

  Calls withTimeout(Duration timeout) {
    return new Calls(channel, credentials, timeout);
  }

  /** {@code stub} with the client's API key (when it has one). */
  <S extends AbstractStub<S>> S prepare(S stub) {
    return credentials == null ? stub : stub.withCallCredentials(credentials);
  }

  /** {@code call} on {@code stub} with the client's deadline. */
  <S extends AbstractStub<S>, T> T unary(S stub, Function<S, T> call) {
    return unary(stub, timeout, call);
  }

  /** {@code call} on {@code stub} with a deadline {@code within} from now. */
  static <S extends AbstractStub<S>, T> T unary(S stub, Duration within, Function<S, T> call) {
    long nanos = Math.max(within.toNanos(), 0);
    try {
      return call.apply(stub.withDeadlineAfter(nanos, TimeUnit.NANOSECONDS));
    } catch (StatusRuntimeException e) {
      throw PatternsException.from(e);
    }
  }

  /**
   * {@code call} on the async {@code stub} with a deadline {@code within} from now, as a
   * future that fails with a PatternsException.
   */
  static <S extends AbstractStub<S>, T> CompletableFuture<T> future(
      S stub, Duration within, BiConsumer<S, StreamObserver<T>> call) {
    CompletableFuture<T> answer = new CompletableFuture<>();
    call.accept(stub.withDeadlineAfter(Math.max(within.toNanos(), 0), TimeUnit.NANOSECONDS), new StreamObserver<T>() {
      @Override
      public void onNext(T value) {
        answer.complete(value);
      }

      @Override
      public void onError(Throwable error) {
        answer.completeExceptionally(PatternsException.from(error));
      }

      @Override
      public void onCompleted() {
        // a unary call's answer came with onNext
      }
    });
    return answer;
  }

  static Duration positive(Duration length, String name) {
    Convert.required(length, name);
    if (length.isNegative() || length.isZero()) {
      throw new IllegalArgumentException(name + " must be positive, not " + length);
    }
    return length;
  }
}
