"""Leaderboard: submit modes, fair ranks for ties, pages, neighbours, periodic boards."""
