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

  /** Close every connection relayed so far; new ones are relayed as before. */
  synchronized void cut() {
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

  private static void pump(Socket from, Socket to) {
    Thread thread = new Thread(() -> {
      try (InputStream in = from.getInputStream(); OutputStream out = to.getOutputStream()) {
        in.transferTo(out);
      } catch (IOException ignored) {
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
