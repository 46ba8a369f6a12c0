/** `client.leaderboard`: ranked boards, all-time or by period. */
import * as pb from "./gen/patterns/leaderboard/v1/leaderboard.js";
import type { CallOptions, Calls } from "./calls.js";

/** A board: its name, order (default HIGH_FIRST) and period (default NONE); `previous`
 * reads the period before the current one (submitting to it is refused). A plain string
 * names a HIGH_FIRST board without a period. */
export interface Board {
  name: string;
  order?: "HIGH_FIRST" | "LOW_FIRST";
  period?: "NONE" | "DAILY" | "WEEKLY" | "MONTHLY";
  previous?: boolean;
}

/** How a submission combines with the member's score: SET replaces, INCREMENT adds, BEST
 * keeps the better. */
export type SubmitMode = "SET" | "INCREMENT" | "BEST";

/** A member's place: `rank` counts from 1. */
export interface Standing {
  member: string;
  score: number;
  rank: number;
}

function fields(board: string | Board) {
  const named = typeof board === "string" ? { name: board } : board;
  return {
    board: named.name,
    order: pb.Order[named.order ?? "HIGH_FIRST"],
    period: pb.Period[named.period ?? "NONE"],
    periodOffset: named.previous ? -1 : 0,
  };
}

const standings = (entries: pb.Entry[]): Standing[] => entries.map(({ member, score, rank }) => ({ member, score, rank }));

export class Leaderboard {
  /** @internal */
  constructor(
    private readonly calls: Calls,
    private readonly stub: pb.LeaderboardClient,
  ) {}

  /** Record `score` for `member` (mode SET by default); its score and rank after. */
  async submit(
    board: string | Board,
    member: string,
    score: number,
    options: CallOptions & { mode?: SubmitMode } = {},
  ): Promise<{ score: number; rank: number; updated: boolean }> {
    const { periodOffset: _, ...where } = fields(board);
    const request = { ...where, member, score, mode: pb.Mode[options.mode ?? "SET"] };
    return await this.calls.unary(this.stub.submit.bind(this.stub), request, options);
  }

  /** The member's standing; null when it is not on the board. */
  async rank(board: string | Board, member: string, options: CallOptions = {}): Promise<Standing | null> {
    const response = await this.calls.unary(this.stub.getRank.bind(this.stub), { ...fields(board), member }, options);
    return response.found ? { member, score: response.score, rank: response.rank } : null;
  }

  /** A page of the board, best first (`limit` default 10), and the board's size. */
  async top(
    board: string | Board,
    options: CallOptions & { limit?: number; offset?: number } = {},
  ): Promise<{ entries: Standing[]; total: number }> {
    const request = { ...fields(board), limit: options.limit ?? 10, offset: options.offset ?? 0 };
    const response = await this.calls.unary(this.stub.top.bind(this.stub), request, options);
    return { entries: standings(response.entries), total: response.total };
  }

  /** The member and up to `radius` (default 5) standings each side; empty when absent. */
  async around(
    board: string | Board,
    member: string,
    options: CallOptions & { radius?: number } = {},
  ): Promise<Standing[]> {
    const request = { ...fields(board), member, radius: options.radius ?? 5 };
    return standings((await this.calls.unary(this.stub.around.bind(this.stub), request, options)).entries);
  }

  /** Take members off; how many were on. */
  async remove(board: string | Board, members: readonly string[], options: CallOptions = {}): Promise<number> {
    const request = { ...fields(board), members: [...members] };
    return (await this.calls.unary(this.stub.remove.bind(this.stub), request, options)).removed;
  }

  /** How many members the board has. */
  async size(board: string | Board, options: CallOptions = {}): Promise<number> {
    return (await this.calls.unary(this.stub.size.bind(this.stub), fields(board), options)).count;
  }
}
