"""examples/client.py against a fake /descriptor (httpx.MockTransport) with known descriptors.

The fake service gives image i the descriptor r_i * (cos t_i, sin t_i, 0, ...), so the cosine
similarity of i and j is cos(t_i - t_j) whatever the lengths r_i: the neighbour ranking has a
closed form.
"""

import io
import math
import re
from pathlib import Path

import httpx
import numpy as np
import pytest

from examples.client import describe, find_images, nearest_neighbours, parse_args, run

ANGLES = [0.0, 0.3, 1.35, 1.72, 3.65, 4.07, 5.07]  # every similarity gap > 0.07
LENGTHS = [1.0, 2.5, 0.4, 3.0, 1.7, 0.9, 5.0]
DIM = 8


def known_descriptor(i: int) -> np.ndarray:
    row = np.zeros(DIM, dtype=np.float32)
    row[0], row[1] = LENGTHS[i] * math.cos(ANGLES[i]), LENGTHS[i] * math.sin(ANGLES[i])
    return row


def expected_neighbours(i: int, top: int) -> list[tuple[int, float]]:
    others = [(j, math.cos(ANGLES[i] - ANGLES[j])) for j in range(len(ANGLES)) if j != i]
    return sorted(others, key=lambda pair: -pair[1])[:top]


class FakeService:
    """Answers /descriptor with the known descriptor of each uploaded file (name img<i>.png)."""

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []
        self.models: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/descriptor"
        assert request.headers["accept"] == "application/x-npy"
        body = request.read()
        names = re.findall(rb'name="images"; filename="img(\d+)\.png"', body)
        self.batch_sizes.append(len(names))
        self.models.append(request.url.params.get("model"))
        rows = np.stack([known_descriptor(int(n)) for n in names])
        buffer = io.BytesIO()
        np.save(buffer, rows, allow_pickle=False)
        return httpx.Response(200, content=buffer.getvalue(), headers={"content-type": "npy"})


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(len(ANGLES)):
        (folder / f"img{i}.png").write_bytes(b"\x89PNG fake " + bytes([i]))
    (folder / "notes.txt").write_text("not an image")
    return folder


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


def test_describe_batches_and_keeps_file_order(image_folder: Path) -> None:
    fake = FakeService()
    paths = find_images(image_folder)
    assert [p.name for p in paths] == [f"img{i}.png" for i in range(len(ANGLES))]
    with httpx.Client(transport=httpx.MockTransport(fake), base_url="http://fake") as client:
        descriptors = describe(client, paths, model="m", batch_size=3)
    assert fake.batch_sizes == [3, 3, 1]
    assert fake.models == ["m", "m", "m"]
    np.testing.assert_array_equal(descriptors, [known_descriptor(i) for i in range(len(ANGLES))])


def test_run_writes_npy_and_reports_top5(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "d.npy"
    args = parse_args([str(image_folder), "--out", str(out), "--batch-size", "2"])
    with httpx.Client(transport=httpx.MockTransport(FakeService()), base_url="http://f") as c:
        text = run(args, c)
    saved = np.load(out, allow_pickle=False)
    assert saved.shape == (len(ANGLES), DIM)
    assert out.with_suffix(".txt").read_text().splitlines()[0].endswith("img0.png")
    lines = text.splitlines()
    assert len(lines) == len(ANGLES)
    for i, line in enumerate(lines):
        listed = [int(n) for n in re.findall(r"img(\d+)\.png ", line.split(": ", 1)[1])]
        assert listed == [j for j, _ in expected_neighbours(i, 5)]


def test_error_envelope_becomes_a_readable_error(image_folder: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(413, json={"error": "body over 1000 bytes", "code": "too_large"})

    with (
        httpx.Client(transport=httpx.MockTransport(refuse), base_url="http://f") as client,
        pytest.raises(RuntimeError, match=r"413: body over 1000 bytes \(too_large\)"),
    ):
        describe(client, find_images(image_folder), model=None, batch_size=4)


def test_a_short_answer_is_refused(image_folder: Path) -> None:
    def one_row(request: httpx.Request) -> httpx.Response:
        buffer = io.BytesIO()
        np.save(buffer, np.ones((1, DIM), dtype=np.float32), allow_pickle=False)
        return httpx.Response(200, content=buffer.getvalue())

    with (
        httpx.Client(transport=httpx.MockTransport(one_row), base_url="http://f") as client,
        pytest.raises(RuntimeError, match="expected 2 descriptors"),
    ):
        describe(client, find_images(image_folder)[:2], model=None, batch_size=2)
