/** `client.counter`: approximate unique counts (HyperLogLog). */
import type * as pb from "./gen/patterns/counter/v1/counter.js";
import { type CallOptions, type Calls, duration } from "./calls.js";

export class UniqueCounter {
  /** @internal */
  constructor(
    private readonly calls: Calls,
    private readonly stub: pb.UniqueCounterClient,
  ) {}

  /** Count `items` under `key` (kept for `ttlMs` when given); whether the estimate changed. */
  async add(key: string, items: readonly string[], options: CallOptions & { ttlMs?: number } = {}): Promise<boolean> {
    const request = { key, items: [...items], ttl: duration(options.ttlMs) };
    return (await this.calls.unary(this.stub.add.bind(this.stub), request, options)).changed;
  }

  /** The estimated number of distinct items of `keys` (one key or their union). */
  async count(keys: string | readonly string[], options: CallOptions = {}): Promise<number> {
    const request = { keys: typeof keys === "string" ? [keys] : [...keys] };
    return (await this.calls.unary(this.stub.count.bind(this.stub), request, options)).count;
  }

  /** Store the union of `sources` under `destination`; its estimated count. */
  async merge(
    destination: string,
    sources: readonly string[],
    options: CallOptions & { ttlMs?: number } = {},
  ): Promise<number> {
    const request = { destination, sources: [...sources], ttl: duration(options.ttlMs) };
    return (await this.calls.unary(this.stub.merge.bind(this.stub), request, options)).count;
  }
}
