package io.patterns.client;

import io.grpc.Status;
import java.util.List;

/**
 * {@link Locks#hold} did not get the lock within its wait: another holder kept it. Its code
 * is ABORTED (a race lost), its reason NOT_ACQUIRED.
 */
public final class LockNotAcquiredException extends PatternsException {
  private static final long serialVersionUID = 1L;
  private final String name;

  LockNotAcquiredException(String name) {
    super(Status.Code.ABORTED, "lock '" + name + "' was not acquired within the wait",
        "NOT_ACQUIRED", List.of(), null, null);
    this.name = name;
  }

  /** The lock's name. */
  public String name() {
    return name;
  }
}
