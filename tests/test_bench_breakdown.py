"""bench.pool_breakdown: its fake receive feeds read_aligned exactly, and its quick form runs
against real servers and prints every stage and the targets."""

import asyncio
from pathlib import Path

import pytest

from app.api.aligned_body import read_aligned
from bench import pool_breakdown


def test_the_fake_receive_hands_read_aligned_the_body_in_the_given_chunks() -> None:
    body = bytes(range(256)) * 1000
    requests = pool_breakdown.fake_request(body, [100_000, 100_000, 56_000])
    for _ in range(2):  # each request replays the chunks from the start
        got = asyncio.run(read_aligned(requests(), 0))
        assert bytes(got) == body


@pytest.mark.slow
def test_quick_breakdown_prints_every_stage_and_the_targets(
    app_repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool_breakdown.main(["--quick", "--repository", str(app_repository)])
    out = capsys.readouterr().out
    stages = ("empty exchange", "receive 16 MB", "parse", "check", "run", "engine's own",
              "encode", "send 4 MB", "sum of the stages", "end to end", "rest")  # fmt: skip
    for stage in stages:
        assert f"| {stage} |" in out, stage
    assert "| /pool npy (raw socket) >= 1.0x the echo app (raw socket) |" in out
    assert "| /pool npy (raw socket) >= 15% of memcpy |" in out
