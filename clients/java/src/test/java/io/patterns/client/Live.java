package io.patterns.client;

import static org.junit.jupiter.api.Assertions.fail;

import java.security.SecureRandom;
import java.util.HexFormat;

/** The live server of the tests that need one: PATTERNS_TARGET, plaintext, no key. */
final class Live {
  private Live() {}

  /** The server's target; the test fails (it is not skipped) when PATTERNS_TARGET is unset. */
  static String target() {
    String target = System.getenv("PATTERNS_TARGET");
    if (target == null || target.isEmpty()) {
      fail("PATTERNS_TARGET is unset: these tests need a plaintext patterns-server (host:port)");
    }
    return target;
  }

  /** A fresh name part, so that runs against one server never collide. */
  static String run() {
    byte[] random = new byte[6];
    new SecureRandom().nextBytes(random);
    return HexFormat.of().formatHex(random);
  }
}
