"""References and helpers shared by the tests (no test module imports from another one).

The references (plain loops, reference packages, torch built-ins, published layouts) never
call the code under test. The lowering helpers at the end compare an ONNX graph with the
library's torch module, itself checked against these references in the op's own test file.
"""

import math
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from nonlocalpooling.pool import NonLocalPool2d

from export.runtime.graph import build_pool_graph
from export.runtime.lowering import STANDARD_KINDS, LoweringKind, lowerings_for
from export.runtime.sessions import create_session, run
from models.pooling import PoolError, create_pool, parse_params
from models.pooling.examples import example_shape
from models.pooling.registry import Shape

CPU = ["CPUExecutionProvider"]


# ---------------------------------------------------------------- sliding windows


def loop_output_length(size, k, s, begin, end, d, ceil):
    """torch's output length rule along one axis, for padding (begin, end) and dilation d:
    in ceil mode the last window must start before input + leading pad."""
    span = size + begin + end - (d * (k - 1) + 1)
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + begin:
        out -= 1
    return out


def window_grid(H, W, k, s, pads, d, ceil):
    """torch's output size (oh, ow) and, per output (i, j), the rows and cols its window taps,
    for (left, right, top, bottom) pads: window i starts at i*s - pad_begin, taps d apart.
    Taps may fall in the padding or, in ceil mode, past it: each reference decides."""
    (kh, kw), (sh, sw), (dh, dw), (left, right, top, bottom) = k, s, d, pads
    oh = loop_output_length(H, kh, sh, top, bottom, dh, ceil)
    ow = loop_output_length(W, kw, sw, left, right, dw, ceil)
    taps = {
        (i, j): (
            [i * sh - top + a * dh for a in range(kh)],
            [j * sw - left + b * dw for b in range(kw)],
        )
        for i in range(oh)
        for j in range(ow)
    }
    return (oh, ow), taps


def loop_window_pool(x, k, s, pads, d, ceil, reduce, count_include_pad=True):
    """Plain-loop max / avg with torch's rules, generalised to (left, right, top, bottom) pads:
    avg divides by the window clipped to input + declared padding (count_include_pad) or by
    the real elements it covers."""
    left, right, top, bottom = pads
    H, W = x.shape[-2:]
    (oh, ow), taps = window_grid(H, W, k, s, pads, d, ceil)
    out = torch.empty(*x.shape[:2], oh, ow, dtype=x.dtype)
    for (i, j), (rows, cols) in taps.items():
        real = [(r, c) for r in rows for c in cols if 0 <= r < H and 0 <= c < W]
        vals = torch.stack([x[..., r, c] for r, c in real], dim=-1)
        if reduce == "max":
            out[..., i, j] = vals.amax(-1)
            continue
        inside = [
            (r, c) for r in rows for c in cols if -top <= r < H + bottom and -left <= c < W + right
        ]
        out[..., i, j] = vals.sum(-1) / (len(inside) if count_include_pad else len(real))
    return out


def arange_plane(h: int, w: int) -> torch.Tensor:
    """0, 1, ..., h*w - 1 as one (1, 1, h, w) plane: the textbooks' worked-example input."""
    return torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w)


# ---------------------------------------------------------------- ops' reference implementations


def loop_netvlad(x, weight, bias, centroids, normalize_input):
    """pytorch-NetVlad's algorithm written out: one sample and one cluster at a time."""
    N, D, H, W = x.shape
    K = centroids.shape[0]
    out = []
    for n in range(N):
        feats = x[n].reshape(D, H * W).T  # one row per location
        if normalize_input:
            feats = feats / feats.norm(dim=1, keepdim=True)
        logits = feats @ weight.reshape(K, D).T
        if bias is not None:
            logits = logits + bias
        assign = torch.softmax(logits, dim=1)  # (HW, K)
        blocks = []
        for k in range(K):
            resid = (assign[:, k : k + 1] * (feats - centroids[k])).sum(dim=0)
            blocks.append(resid / resid.norm())
        vec = torch.cat(blocks)  # K-major: cluster k occupies [k*D, (k+1)*D)
        out.append(vec / vec.norm())
    return torch.stack(out)


def nonlocal_reference(size, c, o=None, squeeze=False, scale=2, seed=0) -> NonLocalPool2d:
    """The nonlocalpooling package's layer with random weights, non-trivial BatchNorm
    statistics and alpha (in train mode, as the package builds it)."""
    torch.manual_seed(seed)
    ref = NonLocalPool2d(list(size), c, o, scale=scale, squeeze=squeeze)
    with torch.no_grad():
        ref.alpha.fill_(0.3)
        ref.norm.running_mean.uniform_(-1, 1)
        ref.norm.running_var.uniform_(0.5, 2)
        ref.norm.weight.uniform_(0.5, 1.5)
        ref.norm.bias.uniform_(-1, 1)
        ref.token_mix[1].weight.uniform_(0.5, 1.5)
        ref.channel_mix[1].bias.uniform_(-1, 1)
    return ref


def reference_regions(H: int, W: int, L: int) -> list[tuple[int, int, int]]:
    """cirtorch's rmac grid with explicit loops, its arithmetic done on float32 tensors as
    there: (top, left, side) per region."""
    w = min(H, W)
    extra = 0
    if H != W:
        steps = torch.tensor([2.0, 3, 4, 5, 6, 7])
        b = (max(H, W) - w) / (steps - 1)
        err = ((w * w - w * b) / (w * w) - 0.4).abs()
        extra = int(torch.argmin(err)) + 1
    extra_h = extra if H > W else 0
    extra_w = extra if W > H else 0
    regions = []
    for level in range(1, L + 1):
        side = math.floor(2 * w / (level + 1))
        if side == 0:
            continue
        half = math.floor(side / 2 - 1)
        starts = []
        for length, count in ((H, level + extra_h), (W, level + extra_w)):
            step = 0 if count == 1 else (length - side) / (count - 1)
            grid = torch.floor(half + torch.arange(count, dtype=torch.float32) * step) - half
            starts.append([int(v) for v in grid.tolist()])
        for top in starts[0]:
            for left in starts[1]:
                regions.append((top, left, side))
    return regions


def torch_fractional_max(
    x, samples, kernel_size, output_size=None, output_ratio=None, return_indices=True
):
    """torch's F.fractional_max_pool2d given these samples (it wants the ratio as a pair)."""
    if isinstance(output_ratio, float):
        output_ratio = (output_ratio, output_ratio)
    return F.fractional_max_pool2d(
        x,
        kernel_size,
        output_size=output_size,
        output_ratio=output_ratio,
        return_indices=return_indices,
        _random_samples=samples,
    )


# ---------------------------------------------------------------- published weight layouts

# torchvision vgg16().features, written out: (index, in, out) per conv; pools at 4, 9, 16, 23.
TORCHVISION_CONVS = [
    (0, 3, 64), (2, 64, 64),
    (5, 64, 128), (7, 128, 128),
    (10, 128, 256), (12, 256, 256), (14, 256, 256),
    (17, 256, 512), (19, 512, 512), (21, 512, 512),
    (24, 512, 512), (26, 512, 512), (28, 512, 512),
]  # fmt: skip


def sailsg_keys(layers, dims, num_classes=1000) -> dict[str, tuple[int, ...]]:
    """sail-sg/poolformer's state_dict layout, as documented in reference-models.md."""
    keys: dict[str, tuple[int, ...]] = {
        "patch_embed.proj.weight": (dims[0], 3, 7, 7),
        "patch_embed.proj.bias": (dims[0],),
    }
    for stage, (depth, c) in enumerate(zip(layers, dims, strict=True)):
        for j in range(depth):
            p = f"network.{2 * stage}.{j}."
            for name in ("layer_scale_1", "layer_scale_2", "norm1.weight", "norm1.bias"):
                keys[p + name] = (c,)
            keys[p + "norm2.weight"] = keys[p + "norm2.bias"] = (c,)
            keys[p + "mlp.fc1.weight"], keys[p + "mlp.fc1.bias"] = (4 * c, c, 1, 1), (4 * c,)
            keys[p + "mlp.fc2.weight"], keys[p + "mlp.fc2.bias"] = (c, 4 * c, 1, 1), (c,)
        if stage < 3:
            keys[f"network.{2 * stage + 1}.proj.weight"] = (dims[stage + 1], c, 3, 3)
            keys[f"network.{2 * stage + 1}.proj.bias"] = (dims[stage + 1],)
    if num_classes:
        keys["norm.weight"] = keys["norm.bias"] = (dims[-1],)
        keys["head.weight"], keys["head.bias"] = (num_classes, dims[-1]), (num_classes,)
    return keys


def random_state(shapes: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with exactly these names and shapes (norm-ish scale for conv weights)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        scale = 0.05 if len(shape) > 1 else 0.5
        out[key] = torch.randn(shape, generator=gen) * scale
    return out


# ---------------------------------------------------------------- lowerings against torch


def as_arrays(out: torch.Tensor | tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    """A module's output (a tensor, or values and indices) as a list of NumPy arrays."""
    return [t.detach().numpy() for t in (out if isinstance(out, tuple) else (out,))]


def module_outputs(op: str, kw: dict, *xs: torch.Tensor) -> list[np.ndarray]:
    """What the library's torch module for ``op`` returns on ``xs``: the lowerings' reference."""
    return as_arrays(create_pool(op, **kw)(*xs))


def accepted_kinds(op: str, kw: dict) -> list[LoweringKind]:
    """The kinds of ``op``'s lowerings that build these params in float32."""
    params = parse_params(op, **kw)
    return [lw.kind for lw in lowerings_for(op) if lw.refusal(params, "float32") is None]


def assert_outputs_match(got: Sequence[np.ndarray], want: Sequence[np.ndarray], atol: float):
    """Same count, shapes, dtypes and NaN positions; integer outputs (indices) equal, floats
    within ``atol``."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        assert g.dtype == w.dtype
        if not np.issubdtype(w.dtype, np.floating):
            np.testing.assert_array_equal(g, w)
            continue
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        np.testing.assert_allclose(g, w, rtol=0, atol=atol)


def fitting_shapes(op: str, params: Any, preferred: Sequence[Shape]) -> list[Shape]:
    """The preferred (N, C, H, W) shapes with the dims the params fix, less those the params
    cannot pool (a window or output larger than the input is a PoolError)."""
    shapes = []
    for shape in preferred:
        fitted = example_shape(op, params, shape)
        try:
            params.output_shape(fitted, fitted)
        except PoolError:
            continue
        shapes.append(fitted)
    return shapes


def input_dims(model: onnx.ModelProto) -> list[list[str | int]]:
    """Each graph input's dims: a symbol where it is dynamic, the number where it is fixed."""
    return [
        [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in model.graph.input
    ]


def assert_lowerings_match_or_refuse(op: str, kw: dict, h: int, w: int) -> None:
    """Valid params: every accepted lowering gives the torch module's shape and values at two
    sizes, one graph for both; invalid ones are the library's PoolError before any graph
    is built."""
    try:
        params = parse_params(op, **kw)
        xs = [torch.randn(1, 2, h, w), torch.randn(2, 1, h + 3, w + 1)]
        wants = [module_outputs(op, kw, x) for x in xs]
    except PoolError:
        return
    for kind in accepted_kinds(op, kw):
        session = create_session(build_pool_graph(op, params, kind=kind), CPU)
        for x, want in zip(xs, wants, strict=True):
            assert_outputs_match(run(session, x.numpy()), want, 1e-5)


def assert_standard_lowerings_in_float16(op: str, kw: dict) -> None:
    """Every standard lowering that takes ``kw`` builds a float16 graph close to the float32
    torch module on the same (float16-rounded) input."""
    x = torch.randn(2, 3, 11, 10).half()
    (want,) = module_outputs(op, kw, x.float())
    kinds = [kind for kind in accepted_kinds(op, kw) if kind in STANDARD_KINDS]
    assert kinds
    for kind in kinds:
        model = build_pool_graph(op, parse_params(op, **kw), dtype="float16", kind=kind)
        (got,) = run(create_session(model, CPU), x.numpy())
        assert got.dtype == np.float16
        # float16 keeps 11 significant bits: values of |x| < 4 are within about 2e-3.
        np.testing.assert_allclose(got, want, rtol=0, atol=4e-3)


# What a script run by ``run_without_torch`` starts and ends with.
_BLOCK_TORCH = """
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
"""
_REPORT_TORCH = """
print("torch loaded:", [m for m in sys.modules if m.startswith("torch") and sys.modules[m]])
"""


def run_without_torch(script: str) -> list[str]:
    """The stdout lines of ``script`` run in a fresh interpreter where ``import torch`` fails,
    the last one naming any torch module loaded anyway (``torch loaded: []``)."""
    code = _BLOCK_TORCH + textwrap.dedent(script) + _REPORT_TORCH
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return result.stdout.splitlines()
