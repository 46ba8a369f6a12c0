package io.patterns.client;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.ArrayList;
import java.util.List;

/**
 * A TCP relay to a server whose connections a test can cut, as a server restart or a network
 * fault would: real sockets, so the client sees what it would see in production.
 */
final class CuttableProxy implements AutoCloseable {
  private final ServerSocket listener;
  private final String host;
  private final int port;
  private final List<Socket> open = new ArrayList<>();
  private boolean held; // guarded by this: bytes read are kept, not relayed, until cut

  CuttableProxy(String target) throws IOException {
    int colon = target.lastIndexOf(':');
    this.host = target.substring(0, colon);
    this.port = Integer.parseInt(target.substring(colon + 1));
    this.listener = new ServerSocket(0, 50, InetAddress.getLoopbackAddress());
    Thread acceptor = new Thread(this::accept, "proxy-accept");
    acceptor.setDaemon(true);
    acceptor.start();
  }

  /** The relay's target, host:port. */
  String target() {
    return "127.0.0.1:" + listener.getLocalPort();
  }

  /**
   * Stop relaying: what either side sends is kept, as by a network that stopped carrying
   * packets, until {@link #release} or {@link #cut}.
   */
  synchronized void hold() {
    held = true;
  }

  /** Relay again, what was held first. */
  synchronized void release() {
    held = false;
    notifyAll();
  }

  /** Close every connection relayed so far (what was held is lost); new ones are relayed as before. */
  synchronized void cut() {
    held = false;
    notifyAll();
    for (Socket socket : open) {
      try {
        socket.close();
      } catch (IOException ignored) {
        // closing is all we want
      }
    }
    open.clear();
  }

  @Override
  public void close() throws IOException {
    listener.close();
    cut();
  }

  private void accept() {
    while (!listener.isClosed()) {
      try {
        Socket client = listener.accept();
        Socket server = new Socket(host, port);
        synchronized (this) {
          open.add(client);
          open.add(server);
        }
        pump(client, server);
        pump(server, client);
      } catch (IOException e) {
        return; // the listener was closed
      }
    }
  }

  private synchronized void awaitRelaying() throws InterruptedException {
    while (held) {
      wait();
    }
  }

  private void pump(Socket from, Socket to) {
    Thread thread = new Thread(() -> {
      try (InputStream in = from.getInputStream(); OutputStream out = to.getOutputStream()) {
        byte[] buffer = new byte[16_384];
        for (int read = in.read(buffer); read >= 0; read = in.read(buffer)) {
          awaitRelaying();
          out.write(buffer, 0, read);
        }
      } catch (IOException | InterruptedException ignored) {
        // cut: the other pump sees it too
      } finally {
        try {
          to.close();
          from.close();
        } catch (IOException ignored) {
          // already closed
        }
      }
    }, "proxy-pump");
    thread.setDaemon(true);
    thread.start();
  }
}
