"""bilinear / bilinear2 against einsum and plain-loop references of Lin et al.'s pipeline."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.pooling import PoolError, PoolInputError, PoolParamError, create_pool, get_pool_spec

RAW = dict(signed_sqrt=False, normalize=False)


def loop_outer_mean(x: torch.Tensor, y: torch.Tensor) -> list[list[float]]:
    """Per sample, B[i][j] = mean over locations of x[i] * y[j], flattened row-major."""
    N, C1, H, W = x.shape
    C2 = y.shape[1]
    xs, ys = x.tolist(), y.tolist()
    out = []
    for n in range(N):
        row = []
        for i in range(C1):
            for j in range(C2):
                total = sum(xs[n][i][r][c] * ys[n][j][r][c] for r in range(H) for c in range(W))
                row.append(total / (H * W))
        out.append(row)
    return out


def loop_pipeline(z: list[list[float]], eps: float) -> torch.Tensor:
    """Signed sqrt of |z| + eps, then divide by the L2 norm floored at eps."""
    out = []
    for row in z:
        s = [math.copysign(math.sqrt(abs(v) + eps), v) if v != 0 else 0.0 for v in row]
        norm = max(math.sqrt(sum(v * v for v in s)), eps)
        out.append([v / norm for v in s])
    return torch.tensor(out, dtype=torch.float64)


def test_raw_homogeneous_is_symmetric_and_matches_einsum() -> None:
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    out = create_pool("bilinear", **RAW)(x)
    assert out.shape == (2, 16)
    b = out.reshape(2, 4, 4)
    torch.testing.assert_close(b, b.transpose(1, 2))
    torch.testing.assert_close(b, torch.einsum("nihw,njhw->nij", x, x) / 15)
    torch.testing.assert_close(out, torch.tensor(loop_outer_mean(x, x), dtype=torch.float64))


def test_full_pipeline_matches_plain_reference() -> None:
    x = torch.randn(3, 5, 4, 4, dtype=torch.float64)  # signed: B has negative entries
    out = create_pool("bilinear")(x)
    torch.testing.assert_close(out, loop_pipeline(loop_outer_mean(x, x), 1e-12))
    torch.testing.assert_close(torch.linalg.vector_norm(out, dim=1), torch.ones(3, dtype=out.dtype))


def test_pipeline_eps_is_used() -> None:
    x = torch.randn(1, 3, 2, 2, dtype=torch.float64)
    out = create_pool("bilinear", eps=0.5)(x)
    torch.testing.assert_close(out, loop_pipeline(loop_outer_mean(x, x), 0.5))


def test_each_step_alone() -> None:
    x = torch.randn(2, 3, 4, 2, dtype=torch.float64)
    raw = torch.tensor(loop_outer_mean(x, x), dtype=torch.float64)
    sqrt_only = create_pool("bilinear", normalize=False, eps=1e-12)(x)
    torch.testing.assert_close(sqrt_only, raw.sign() * (raw.abs() + 1e-12).sqrt())
    l2_only = create_pool("bilinear", signed_sqrt=False)(x)
    torch.testing.assert_close(l2_only, raw / raw.norm(dim=1, keepdim=True))


def test_two_input_form_is_row_major_c1_by_c2() -> None:
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    y = torch.randn(2, 2, 4, 5, dtype=torch.float64)
    out = create_pool("bilinear2", **RAW)(x, y)
    assert out.shape == (2, 6)
    torch.testing.assert_close(out, torch.tensor(loop_outer_mean(x, y), dtype=torch.float64))
    # Entry (i, j) sits at i * C2 + j: (2, 1) -> 5.
    torch.testing.assert_close(out[:, 5], (x[:, 2] * y[:, 1]).mean(dim=(1, 2)))
    full = create_pool("bilinear2")(x, y)
    torch.testing.assert_close(full, loop_pipeline(loop_outer_mean(x, y), 1e-12))


def test_two_input_form_with_x_twice_equals_one_input_form() -> None:
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(create_pool("bilinear2")(x, x), create_pool("bilinear")(x))


def test_zero_input_gives_zeros_not_nan() -> None:
    out = create_pool("bilinear")(torch.zeros(1, 3, 2, 2))
    assert torch.equal(out, torch.zeros(1, 9))


def test_specs_declare_their_inputs() -> None:
    assert get_pool_spec("bilinear").input_names == ("x",)
    assert get_pool_spec("bilinear2").input_names == ("x", "y")


@pytest.mark.parametrize(
    ("y_shape", "fragment"),
    [((2, 3, 4, 6), "same batch size, height and width"), ((1, 3, 4, 5), "same batch")],
)
def test_shape_mismatch_raises(y_shape: tuple, fragment: str) -> None:
    with pytest.raises(PoolInputError, match=fragment):
        create_pool("bilinear2")(torch.randn(2, 3, 4, 5), torch.randn(*y_shape))


def test_bad_inputs_and_params() -> None:
    x = torch.randn(1, 2, 3, 3)
    with pytest.raises(PoolInputError, match="dtype"):
        create_pool("bilinear2")(x, x.double())
    with pytest.raises(PoolInputError, match="4-D"):
        create_pool("bilinear")(torch.randn(2, 3, 3))
    with pytest.raises(PoolInputError, match="floating"):
        create_pool("bilinear")(torch.ones(1, 2, 3, 3, dtype=torch.int64))
    with pytest.raises(PoolParamError, match="eps"):
        create_pool("bilinear", eps=0.0)


@settings(max_examples=40, deadline=None)
@given(
    c1=st.integers(1, 5),
    c2=st.integers(1, 5),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    dh=st.integers(-1, 1),
    eps=st.floats(-1e-6, 1e-3, allow_nan=False),
)
def test_shape_property(c1: int, c2: int, h: int, w: int, dh: int, eps: float) -> None:
    """Matching grids give (N, C1 * C2); any mismatch or bad eps is a PoolError."""
    x = torch.randn(2, c1, h, w)
    y = torch.randn(2, c2, max(h + dh, 1), w)
    try:
        out = create_pool("bilinear2", eps=eps)(x, y)
    except PoolError:
        assert eps <= 0 or y.shape[2] != h
        return
    assert out.shape == (2, c1 * c2)
    assert create_pool("bilinear", eps=eps)(x).shape == (2, c1 * c1)
