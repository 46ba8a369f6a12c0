package io.patterns.client;

import io.patterns.leaderboard.v1.AroundRequest;
import io.patterns.leaderboard.v1.Entry;
import io.patterns.leaderboard.v1.GetRankRequest;
import io.patterns.leaderboard.v1.GetRankResponse;
import io.patterns.leaderboard.v1.LeaderboardGrpc;
import io.patterns.leaderboard.v1.Mode;
import io.patterns.leaderboard.v1.Order;
import io.patterns.leaderboard.v1.Period;
import io.patterns.leaderboard.v1.RemoveRequest;
import io.patterns.leaderboard.v1.SizeRequest;
import io.patterns.leaderboard.v1.SubmitRequest;
import io.patterns.leaderboard.v1.SubmitResponse;
import io.patterns.leaderboard.v1.TopRequest;
import io.patterns.leaderboard.v1.TopResponse;
import java.time.Duration;
import java.util.Collection;
import java.util.List;
import java.util.Optional;

/**
 * {@code client.leaderboard()}: scores, fair ranks for ties (1, 2, 2, 4), pages, neighbours,
 * and periodic boards. A board is named by a String (highest first, never reset) or a
 * {@link Board} (its order, period, and whether the previous period is read).
 */
public final class Leaderboard {
  private final Calls calls;
  private final LeaderboardGrpc.LeaderboardBlockingStub stub;

  Leaderboard(Calls calls) {
    this.calls = calls;
    this.stub = calls.prepare(LeaderboardGrpc.newBlockingStub(calls.channel));
  }

  /** This service with another deadline per call. */
  public Leaderboard withTimeout(Duration timeout) {
    return new Leaderboard(calls.withTimeout(timeout));
  }

  /** A board: its name, order and period; {@code previous} reads the period before the current one. */
  public record Board(String name, Order order, Period period, boolean previous) {
    /** The board {@code name}: highest scores first, never reset. */
    public static Board of(String name) {
      return new Board(name, Order.ORDER_HIGH_FIRST, Period.PERIOD_NONE, false);
    }

    int offset() {
      return previous ? -1 : 0;
    }
  }

  /** A member's place on a board. */
  public record Standing(String member, double score, long rank) {}

  /** A submission's result: the member's score and rank after it, and whether the score changed. */
  public record Submitted(double score, long rank, boolean updated) {}

  /** A page of standings, best first, and how many members the board has. */
  public record Page(List<Standing> standings, long total) {}

  /** Set {@code member}'s score (mode SET). */
  public Submitted submit(String board, String member, double score) {
    return submit(Board.of(board), member, score, Mode.MODE_SET);
  }

  /** Record {@code score} for {@code member}: SET replaces, INCREMENT adds, BEST keeps the better. */
  public Submitted submit(Board board, String member, double score, Mode mode) {
    if (board.previous()) {
      throw new IllegalArgumentException("a submission goes to the current period, not the previous one");
    }
    SubmitRequest request = SubmitRequest.newBuilder()
        .setBoard(board.name()).setOrder(board.order()).setPeriod(board.period())
        .setMember(member).setScore(score).setMode(mode).build();
    SubmitResponse response = calls.unary(stub, s -> s.submit(request));
    return new Submitted(response.getScore(), response.getRank(), response.getUpdated());
  }

  /** The member's standing; empty when it is not on the board. */
  public Optional<Standing> rank(String board, String member) {
    return rank(Board.of(board), member);
  }

  public Optional<Standing> rank(Board board, String member) {
    GetRankRequest request = GetRankRequest.newBuilder()
        .setBoard(board.name()).setOrder(board.order()).setPeriod(board.period())
        .setPeriodOffset(board.offset()).setMember(member).build();
    GetRankResponse response = calls.unary(stub, s -> s.getRank(request));
    return response.getFound()
        ? Optional.of(new Standing(member, response.getScore(), response.getRank()))
        : Optional.empty();
  }

  /** The best {@code limit} standings, and the board's size. */
  public Page top(String board, int limit) {
    return top(Board.of(board), limit, 0);
  }

  /** {@code limit} standings from the {@code offset}-th best. */
  public Page top(Board board, int limit, long offset) {
    TopRequest request = TopRequest.newBuilder()
        .setBoard(board.name()).setOrder(board.order()).setPeriod(board.period())
        .setPeriodOffset(board.offset()).setLimit(limit).setOffset(offset).build();
    TopResponse response = calls.unary(stub, s -> s.top(request));
    return new Page(standings(response.getEntriesList()), response.getTotal());
  }

  /** The standings within {@code radius} places of {@code member}. */
  public List<Standing> around(String board, String member, int radius) {
    return around(Board.of(board), member, radius);
  }

  public List<Standing> around(Board board, String member, int radius) {
    AroundRequest request = AroundRequest.newBuilder()
        .setBoard(board.name()).setOrder(board.order()).setPeriod(board.period())
        .setPeriodOffset(board.offset()).setMember(member).setRadius(radius).build();
    return standings(calls.unary(stub, s -> s.around(request)).getEntriesList());
  }

  /** Remove members; how many were on the board. */
  public long remove(String board, String... members) {
    return remove(Board.of(board), List.of(members));
  }

  public long remove(Board board, Collection<String> members) {
    RemoveRequest request = RemoveRequest.newBuilder()
        .setBoard(board.name()).setOrder(board.order()).setPeriod(board.period())
        .setPeriodOffset(board.offset()).addAllMembers(members).build();
    return calls.unary(stub, s -> s.remove(request)).getRemoved();
  }

  /** How many members the board has. */
  public long size(String board) {
    return size(Board.of(board));
  }

  public long size(Board board) {
    SizeRequest request = SizeRequest.newBuilder()
        .setBoard(board.name()).setOrder(board.order()).setPeriod(board.period())
        .setPeriodOffset(board.offset()).build();
    return calls.unary(stub, s -> s.size(request)).getCount();
  }

  private static List<Standing> standings(List<Entry> entries) {
    return entries.stream().map(e -> new Standing(e.getMember(), e.getScore(), e.getRank())).toList();
  }
}
