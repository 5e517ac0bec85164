"""examples/client.py: against the real service (``python -m app``) for descriptors, bad files
and resuming, and against a small stub /descriptor (in process, through httpx's ASGI
transport) whose answers a test scripts: 503s, 401s, delays.

The stub gives image ``img<i>.png`` the descriptor r_i * (cos t_i, sin t_i, 0, ...), so the
cosine similarity of i and j is cos(t_i - t_j) whatever the lengths r_i: the neighbour
ranking has a closed form.
"""

from __future__ import annotations

import asyncio
import io
import math
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench.server import free_port, serve
from examples.descriptor_client.cli import http_client, main, neighbours_text, parse_args, run
from examples.descriptor_client.inputs import collect
from examples.descriptor_client.neighbours import nearest_neighbours
from examples.descriptor_client.retry import retry_after_s
from examples.descriptor_client.summary import Summary
from tests.app_fixtures import SMOKE_MODEL, npy_bytes

ROOT = Path(__file__).resolve().parents[1]
NPY = "application/x-npy"
ANGLES = [0.0, 0.3, 1.35, 1.72, 3.65, 4.07, 5.07]  # every similarity gap > 0.07
LENGTHS = [1.0, 2.5, 0.4, 3.0, 1.7, 0.9, 5.0]
DIM = 8
CODES = {401: "unauthorized", 404: "unknown_model", 422: "validation_error", 429: "too_many"}
CODES |= {503: "overloaded"}


def known_descriptor(i: int) -> np.ndarray:
    row = np.zeros(DIM, dtype=np.float32)
    row[0], row[1] = LENGTHS[i] * math.cos(ANGLES[i]), LENGTHS[i] * math.sin(ANGLES[i])
    return row


def expected_neighbours(i: int, top: int) -> list[tuple[int, float]]:
    others = [(j, math.cos(ANGLES[i] - ANGLES[j])) for j in range(len(ANGLES)) if j != i]
    return sorted(others, key=lambda pair: -pair[1])[:top]


class Stub:
    """/descriptor by script: request k gets ``statuses[k]`` (the last one repeats); 200 is
    the known descriptor of each part ``img<i>.png``. With ``key``, a request without
    ``Authorization: Bearer <key>`` gets 401 in the envelope."""

    def __init__(
        self,
        *statuses: int,
        retry_after: str | None = None,
        delay_s: float = 0.0,
        key: str | None = None,
    ) -> None:
        self.statuses = statuses or (200,)
        self.retry_after = retry_after
        self.delay_s = delay_s
        self.key = key
        self.arrivals: list[float] = []
        self.names: list[list[str]] = []
        self.in_flight = self.most_in_flight = 0
        self.app = Starlette(routes=[Route("/descriptor", self.describe, methods=["POST"])])

    async def describe(self, request: Request) -> Response:
        self.arrivals.append(time.monotonic())
        async with request.form() as form:
            names = [str(getattr(part, "filename", "")) for part in form.getlist("images")]
        self.names.append(names)
        status = self.statuses[min(len(self.arrivals), len(self.statuses)) - 1]
        if self.key is not None and request.headers.get("authorization") != f"Bearer {self.key}":
            status = 401
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(self.delay_s)
        self.in_flight -= 1
        if status != 200:
            headers = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
            body = {"error": "the stub says no", "code": CODES[status]}
            return JSONResponse(body, status_code=status, headers=headers)
        rows = np.stack([known_descriptor(int(re.sub(r"\D", "", n))) for n in names])
        return Response(npy_bytes(rows), media_type=NPY)


def run_with(
    argv: Sequence[str], transport: httpx.AsyncBaseTransport | None = None
) -> tuple[Summary, list[httpx.Request]]:
    """``run`` as the CLI would, through ``transport``; also every request the client sent."""
    sent: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        sent.append(request)

    async def go() -> Summary:
        args = parse_args([*argv, "--no-progress"])
        async with http_client(args, transport) as client:
            client.event_hooks["request"].append(record)
            return await run(args, client)

    return asyncio.run(go()), sent


def stub_run(stub: Stub, argv: Sequence[str]) -> Summary:
    summary, _ = run_with([*argv, "--url", "http://stub"], httpx.ASGITransport(app=stub.app))
    return summary


@pytest.fixture
def fake_images(tmp_path: Path) -> Path:
    """``img<i>.png`` for the stub (it never decodes them)."""
    folder = tmp_path / "fake"
    folder.mkdir()
    for i in range(len(ANGLES)):
        (folder / f"img{i}.png").write_bytes(b"\x89PNG fake " + bytes([i]))
    (folder / "notes.txt").write_text("not an image, and not .png: never sent")
    return folder


# ---- nearest neighbours: closed form ------------------------------------------------------


def test_no_ties_in_the_fixture() -> None:
    # A tie would make the expected order ambiguous; keep every gap clear of rounding.
    for i in range(len(ANGLES)):
        scores = [s for _, s in expected_neighbours(i, len(ANGLES))]
        assert min(a - b for a, b in zip(scores, scores[1:], strict=False)) > 0.05


def test_ranking_matches_cosine_of_angle_differences() -> None:
    descriptors = np.stack([known_descriptor(i) for i in range(len(ANGLES))])
    order, scores = nearest_neighbours(descriptors, top=5)
    for i in range(len(ANGLES)):
        expected = expected_neighbours(i, 5)
        assert order[i].tolist() == [j for j, _ in expected]
        np.testing.assert_allclose(scores[i], [s for _, s in expected], atol=1e-6)


def test_top_is_capped_by_the_other_images() -> None:
    descriptors = np.stack([known_descriptor(i) for i in range(3)])
    order, _ = nearest_neighbours(descriptors, top=5)
    assert order.shape == (3, 2)
    assert all(i not in order[i] for i in range(3))


def test_stored_descriptors_give_the_closed_form_neighbours(
    fake_images: Path, tmp_path: Path
) -> None:
    argv = [str(fake_images), "--out", str(tmp_path / "out"), "--batch", "3"]
    summary = stub_run(Stub(), argv)
    assert (summary.described, summary.failed, summary.requests) == (len(ANGLES), {}, 3)
    for i in range(len(ANGLES)):
        saved = np.load(tmp_path / "out" / f"img{i}.png.npy", allow_pickle=False)
        np.testing.assert_array_equal(saved, known_descriptor(i))
    lines = neighbours_text(parse_args(argv), 5).splitlines()
    for i, line in enumerate(lines):
        listed = [int(n) for n in re.findall(r"img(\d+)\.png ", line.split(": ", 1)[1])]
        assert listed == [j for j, _ in expected_neighbours(i, 5)]


# ---- the real service ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server_url(app_repository: Path) -> Iterator[str]:
    with serve(app_repository, [SMOKE_MODEL]) as running:
        yield running.url


def write_images(folder: Path, count: int) -> list[Path]:
    """Noise images of a few sizes, JPEG and PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for i in range(count):
        pixels = rng.integers(0, 256, (96 + 8 * i, 128, 3), dtype=np.uint8)
        path = folder / f"photo{i}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def direct_descriptor(url: str, path: Path) -> np.ndarray:
    """What /descriptor answers for this one image, sent as a raw body."""
    kind = "image/png" if path.suffix == ".png" else "image/jpeg"
    headers = {"Content-Type": kind, "Accept": NPY}
    response = httpx.post(f"{url}/descriptor", content=path.read_bytes(), headers=headers)
    assert response.status_code == 200, response.text
    rows = np.load(io.BytesIO(response.content), allow_pickle=False)
    assert rows.shape[0] == 1
    row: np.ndarray = rows[0]
    return row


@pytest.mark.parametrize("reply", ["npy", "json"])
def test_descriptors_are_what_the_service_answers(
    server_url: str, tmp_path: Path, reply: str
) -> None:
    photos = write_images(tmp_path / "photos", 5)
    out = tmp_path / "out"
    argv = [str(tmp_path / "photos"), "--out", str(out), "--url", server_url, "--format", reply]
    assert main([*argv, "--batch", "2", "--concurrency", "2", "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{p.name}.npy" for p in photos)
    for photo in photos:
        saved = np.load(out / f"{photo.name}.npy", allow_pickle=False)
        assert saved.dtype == np.float32
        assert saved.ndim == 1
        np.testing.assert_array_equal(saved, direct_descriptor(server_url, photo))


def test_bad_files_are_named_and_skipped(server_url: str, tmp_path: Path) -> None:
    photos = write_images(tmp_path / "photos", 3)
    whole = photos[1].read_bytes()  # a JPEG
    (tmp_path / "photos" / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "photos" / "notes.jpg").write_text("a text file with an image's name\n")
    text = tmp_path / "readme.txt"
    text.write_text("named on the command line, so sent whatever its suffix\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "examples/client.py", str(tmp_path / "photos"), str(text)]
    cmd += [str(tmp_path / "gone.jpg"), "--out", str(out), "--url", server_url, "--batch", "8"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    failed = dict(re.findall(r"^failed: (\S+): (.*)$", done.stdout, re.MULTILINE))
    for name in ("truncated.jpg", "notes.jpg", "readme.txt"):
        assert failed[str(tmp_path / "photos" / name if name != "readme.txt" else text)] == (
            "415 bad_image: the image is corrupt, truncated or not a JPEG, PNG or WebP file"
        )
    assert failed[str(tmp_path / "gone.jpg")].startswith("unreadable: ")
    assert len(failed) == 4
    assert "described 3 of 7 images" in done.stdout
    for photo in photos:
        saved = np.load(out / f"{photo.name}.npy", allow_pickle=False)
        np.testing.assert_array_equal(saved, direct_descriptor(server_url, photo))
    assert len(list(out.iterdir())) == len(photos)


def test_a_rerun_sends_only_what_is_missing(server_url: str, tmp_path: Path) -> None:
    photos = write_images(tmp_path / "photos", 4)
    argv = [str(tmp_path / "photos"), "--out", str(tmp_path / "out"), "--url", server_url]
    first, sent = run_with([*argv, "--batch", "1"])
    assert (first.described, len(sent)) == (4, 4)
    again, sent = run_with(argv)
    assert (again.described, again.skipped, again.exit_code, sent) == (0, 4, 0, [])
    lost = tmp_path / "out" / f"{photos[2].name}.npy"
    before = np.load(lost)
    lost.unlink()
    third, sent = run_with(argv)
    assert (third.described, third.skipped, len(sent)) == (1, 3, 1)
    assert f'filename="{photos[2].name}"'.encode() in sent[0].read()
    np.testing.assert_array_equal(np.load(lost), before)


def test_the_service_takes_the_key_and_refuses_without_it(
    app_repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_images(tmp_path / "photos", 2)
    with serve(app_repository, [SMOKE_MODEL], api_keys="k-client-test") as running:
        argv = [str(tmp_path / "photos"), "--out", str(tmp_path / "out"), "--url", running.url]
        refused, sent = run_with([*argv, "--concurrency", "1", "--batch", "1"])
        assert refused.aborted is not None
        assert refused.aborted.startswith("401 unauthorized: ")
        assert (refused.described, refused.exit_code, len(sent)) == (0, 2, 1)
        monkeypatch.setenv("POOLSERVE_API_KEY", "k-client-test")
        accepted, sent = run_with(argv)
    assert (accepted.described, accepted.exit_code) == (2, 0)
    assert sent[0].headers["authorization"] == "Bearer k-client-test"


# ---- retries, aborts and concurrency against the stub --------------------------------------


@pytest.mark.parametrize("status", [503, 429])
def test_retry_after_is_waited_for(status: int, fake_images: Path, tmp_path: Path) -> None:
    stub = Stub(status, 200, retry_after="1")
    argv = [str(fake_images / "img0.png"), "--out", str(tmp_path / "out"), "--backoff", "0.05"]
    summary = stub_run(stub, argv)
    assert (summary.described, summary.retries, len(stub.arrivals)) == (1, 1, 2)
    waited = stub.arrivals[1] - stub.arrivals[0]
    assert 1.0 <= waited < 1.0 + 0.05 + 0.5  # Retry-After, jitter up to --backoff, slack


def test_retries_stop_after_the_limit(fake_images: Path, tmp_path: Path) -> None:
    stub = Stub(503, retry_after="0")
    argv = [str(fake_images / "img0.png"), str(fake_images / "img1.png"), "--batch", "2"]
    argv += ["--out", str(tmp_path / "out"), "--backoff", "0.01"]
    summary = stub_run(stub, [*argv, "--retries", "2"])
    assert len(stub.arrivals) == 3  # the first try and two retries, never split
    assert summary.retries == 2
    reason = "503 overloaded: the stub says no (gave up after 2 retries)"
    assert summary.failed == {fake_images / "img0.png": reason, fake_images / "img1.png": reason}
    assert summary.exit_code == 1


def test_a_refused_image_is_not_retried(fake_images: Path, tmp_path: Path) -> None:
    stub = Stub(422)
    summary = stub_run(stub, [str(fake_images / "img0.png"), "--out", str(tmp_path / "o")])
    assert (len(stub.arrivals), summary.retries, summary.exit_code) == (1, 0, 1)
    assert summary.failed == {fake_images / "img0.png": "422 validation_error: the stub says no"}


def test_a_refused_batch_is_resent_image_by_image(fake_images: Path, tmp_path: Path) -> None:
    stub = Stub(422, 200, 422, 200)  # the batch, then img0, img1 (the culprit), img2
    argv = [str(fake_images / f"img{i}.png") for i in range(3)]
    summary = stub_run(stub, [*argv, "--out", str(tmp_path / "out"), "--batch", "3"])
    assert stub.names == [["img0.png", "img1.png", "img2.png"], ["img0.png"], ["img1.png"]] + [
        ["img2.png"]
    ]
    assert list(summary.failed) == [fake_images / "img1.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img0.png.npy", "img2.png.npy"]


def test_an_unknown_model_stops_the_run(fake_images: Path, tmp_path: Path) -> None:
    stub = Stub(404)
    argv = [str(fake_images), "--out", str(tmp_path / "out"), "--batch", "1"]
    summary = stub_run(stub, [*argv, "--concurrency", "1", "--model", "nope"])
    assert (len(stub.arrivals), summary.retries, summary.exit_code) == (1, 0, 2)
    assert summary.aborted == "404 unknown_model: the stub says no"
    assert summary.not_attempted == len(ANGLES)


def test_connection_errors_are_retried(fake_images: Path, tmp_path: Path) -> None:
    stub = Stub()
    calls = []

    async def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("connection refused", request=request)
        return await httpx.ASGITransport(app=stub.app).handle_async_request(request)

    argv = [str(fake_images / "img3.png"), "--out", str(tmp_path / "out"), "--backoff", "0.01"]
    summary, _ = run_with([*argv, "--url", "http://stub"], httpx.MockTransport(flaky))
    assert (len(calls), summary.retries, summary.described) == (2, 1, 1)
    saved = np.load(tmp_path / "out" / "img3.png.npy")
    np.testing.assert_array_equal(saved, known_descriptor(3))


def test_no_server_stops_the_run(fake_images: Path, tmp_path: Path, capsys) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    argv = [str(fake_images), "--out", str(tmp_path / "out"), "--url", url, "--no-progress"]
    started = time.monotonic()
    assert main([*argv, "--retries", "2", "--backoff", "0.01"]) == 2
    assert time.monotonic() - started < 10
    out = capsys.readouterr().out
    assert "described 0 of 7 images" in out
    assert re.search(r"stopped, \d+ images not sent: connection: .*gave up after 2 retries", out)


def test_the_api_key_is_sent_as_a_bearer_token(
    fake_images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = [str(fake_images), "--concurrency", "1"]
    without = stub_run(Stub(key="s3cret"), [*argv, "--out", str(tmp_path / "none")])
    assert (without.described, without.aborted) == (0, "401 unauthorized: the stub says no")
    monkeypatch.setenv("POOLSERVE_API_KEY", "s3cret")
    from_env = stub_run(Stub(key="s3cret"), [*argv, "--out", str(tmp_path / "env")])
    assert from_env.described == len(ANGLES)
    monkeypatch.delenv("POOLSERVE_API_KEY")
    flag = stub_run(Stub(key="k2"), [*argv, "--out", str(tmp_path / "flag"), "--api-key", "k2"])
    assert flag.described == len(ANGLES)


def test_requests_in_flight_stay_within_concurrency(fake_images: Path, tmp_path: Path) -> None:
    stub = Stub(delay_s=0.05)
    argv = [str(fake_images), "--out", str(tmp_path / "out"), "--batch", "1"]
    summary = stub_run(stub, [*argv, "--concurrency", "3"])
    assert summary.described == len(ANGLES)
    assert stub.most_in_flight == 3


def test_answers_are_kept_when_a_run_stops(fake_images: Path, tmp_path: Path) -> None:
    argv = [str(fake_images), "--out", str(tmp_path / "out"), "--batch", "1"]
    stopped = stub_run(Stub(200, 200, 401), [*argv, "--concurrency", "1"])
    assert (stopped.described, stopped.exit_code) == (2, 2)
    stub = Stub()
    resumed = stub_run(stub, argv)
    assert (resumed.skipped, resumed.described, len(stub.arrivals)) == (2, 5, 5)
    assert stub.names == [[f"img{i}.png"] for i in range(2, 7)]
    # Only finished files: no temporary file was left behind.
    assert len(list((tmp_path / "out").iterdir())) == len(ANGLES)


def test_two_files_of_one_name_are_refused(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"would both be saved as x\.jpg"):
        collect([tmp_path / "a", tmp_path / "b" / "x.jpg"])
    assert [i.key for i in collect([tmp_path / "a", tmp_path / "a" / "x.jpg"])] == ["x.jpg"]


def test_retry_after_as_an_http_date() -> None:
    from email.utils import formatdate

    assert retry_after_s("7") == 7.0
    assert retry_after_s(None) is None
    assert retry_after_s("soon") is None
    wait = retry_after_s(formatdate(time.time() + 30, usegmt=True))
    assert wait is not None
    assert 28 <= wait <= 30


def test_the_script_runs_from_a_checkout() -> None:
    done = subprocess.run(
        [sys.executable, "examples/client.py", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "--concurrency" in done.stdout
    assert "POOLSERVE_API_KEY" in done.stdout
