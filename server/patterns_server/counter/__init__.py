"""UniqueCounter: HyperLogLog counting of distinct items."""
