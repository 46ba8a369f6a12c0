package io.patterns.client;

/**
 * What a rate-limit check answers when the server cannot answer within its budget (it or
 * its Redis unavailable, paused or overloaded, or no connection).
 */
public enum OnUnavailable {
  /** Throw the PatternsException (the default). */
  RAISE,
  /** Admit: fail open (an outage of the limiter is not an outage of what it protects). */
  ALLOW,
  /** Refuse: fail closed, for the error's retry-after (else a second). */
  DENY
}
