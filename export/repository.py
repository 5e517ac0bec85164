"""Write the model repository: one ONNX file per model, gated, and ``manifest.json`` last.

Layout and manifest are the contract in ``docs/model-repository.md``. Each model is built
(seeded, or from a checkpoint), exported with ``export_module`` (dynamic batch, and dynamic
H/W wherever the model takes any size), passed through the parity gate, and only then
written. The manifest is written last and atomically, and any manifest already in the
folder is removed first, so a failed export never leaves a manifest pointing at files it
did not check.

Dynamic H/W for ``resize="exact"`` models: the service resizes to the policy's size, but
the graph still accepts any H, W >= ``min_hw``. We keep those dims symbolic: one graph
serves clients that send tensors already at another size, and the gate proves the graph
right off the traced size, which a fixed graph could not show.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper
from torch import nn

from export.fp16 import MAX_ABS_ERROR, MIN_COSINE, check_fp16, fp16_name, to_fp16
from export.parity import check_artifact
from export.pbtxt import config_pbtxt
from export.runtime.errors import ExportError
from export.runtime.lowering import Prefer
from export.runtime.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    LoweringRecord,
    Manifest,
    ModelEntry,
    ModelKind,
    ParityRecord,
    TensorSpec,
)
from export.runtime.versions import IR_VERSION, OPSET
from export.torch_export import export_module, torch_reference
from models.digest import sha256_file
from models.pooling.netvlad import NetVLAD
from models.pooling.nonlocal_pool import NonLocalParams, NonLocalPool
from models.zoo import BuiltModel, ModelCfg, build_model, list_models

DEFAULT_MODEL = "netvlad_poolformer_s12"
"""The descriptor the service answers with when a request names none."""

SMOKE_MODEL = "netvlad_poolformer_s12_224"
"""The small, fast descriptor for tests and CI smoke runs."""

DEFAULT_MODELS = (
    DEFAULT_MODEL,
    SMOKE_MODEL,
    "netvlad_vgg16",
    "poolformer_s12",
    "netvlad_head",
    "nonlocal_pool",
)
"""What ``python -m export`` writes when no model is named."""

OUTPUT_NAME = "y"
PROVIDERS = ("CPUExecutionProvider",)
TRACED_BATCH = 2
"""torch specialises a dim traced at size 1, so batch is traced at 2."""

Shape = tuple[int, ...]


class RepositoryUsageError(ValueError):
    """The request cannot be exported as asked: unknown model, weights for a model that
    takes none. The CLI maps it to exit code 2."""


@dataclass(frozen=True)
class ExportJob:
    """One model to export: the module, how to trace and gate it, and what to record."""

    name: str
    kind: ModelKind
    module: nn.Module
    weights: str
    traced: Shape
    parity_shapes: tuple[Shape, ...]
    dynamic_axes: Mapping[int, str]
    min_hw: int | None
    cfg: dict[str, Any] | None = None
    op: str | None = None
    params: dict[str, Any] | None = None


@dataclass(frozen=True)
class ModelReport:
    """What one model's export took, for the CLI's progress lines."""

    name: str
    seconds: float
    entry: ModelEntry


# Jobs ------------------------------------------------------------------------------------


def min_hw_for(cfg: ModelCfg) -> int:
    """The smallest input side whose deepest feature map is still >= 2 pixels: torch
    refuses a dynamic range that reaches a 1-pixel map. VGG16's conv5_3 is /16, PoolFormer's
    last stage /32."""
    return 32 if cfg.backbone == "vgg16" else 64


def _served_hw(cfg: ModelCfg) -> tuple[int, int] | None:
    """The H, W the service feeds this model, when its policy fixes one."""
    policy = cfg.preprocess
    return policy.size if policy.size is not None else policy.crop


def zoo_job(built: BuiltModel) -> ExportJob:
    """A named descriptor or classifier: input (N, 3, H, W), all of N, H, W symbolic.

    Parity runs at the traced shape (the served size when the policy fixes one), at an odd
    H/W with batch 1, and at the smallest accepted size with batch 3.
    """
    cfg = built.cfg
    low = min_hw_for(cfg)
    traced = (TRACED_BATCH, 3, *(_served_hw(cfg) or (224, 224)))
    shapes = (traced, (1, 3, 97, 131), (3, 3, low, low + 1))
    return ExportJob(
        name=cfg.name,
        kind=cfg.task,
        module=built.module,
        weights=built.provenance,
        traced=traced,
        parity_shapes=shapes,
        dynamic_axes={0: "N", 2: "H", 3: "W"},
        min_hw=low,
        cfg=json.loads(json.dumps(cfg.as_dict())),  # tuples -> lists: the JSON form
    )


def netvlad_head_job(built: BuiltModel) -> ExportJob:
    """The default descriptor's NetVLAD layer alone, same weights: (N, 512, H, W) -> (N, K*D).

    Parity at the default model's map (480x640 / 32 = 15x20), at 224 / 32 = 7x7 and at an
    odd 2x3 with batch 3.
    """
    pool = built.module.pool
    if not isinstance(pool, NetVLAD):
        raise RepositoryUsageError(f"{built.cfg.name} has no NetVLAD head to export alone")
    dim = pool.params.dim
    traced = (TRACED_BATCH, dim, 15, 20)
    return ExportJob(
        name="netvlad_head",
        kind="pool_op",
        module=pool,
        weights=f"{built.provenance} (the pool layer of {built.cfg.name})",
        traced=traced,
        parity_shapes=(traced, (1, dim, 7, 7), (3, dim, 2, 3)),
        dynamic_axes={0: "N", 2: "H", 3: "W"},
        min_hw=1,
        op="netvlad",
        params=pool.params.model_dump(mode="json"),
    )


NONLOCAL_PARAMS: dict[str, Any] = {"in_channels": 256, "in_size": (14, 14), "seed": 0}
"""A ResNet stage-4-like map (256 x 14 x 14). Its token-mixing weights are per token, so H
and W are fixed by ``in_size``: only the batch is dynamic."""


def nonlocal_job() -> ExportJob:
    params = NonLocalParams(**NONLOCAL_PARAMS)
    module = NonLocalPool(params).eval()
    seed = params.seed
    shape: Shape = (params.in_channels, *params.in_size)
    traced = (TRACED_BATCH, *shape)
    return ExportJob(
        name="nonlocal_pool",
        kind="pool_op",
        module=module,
        weights=f"seeded-init(seed={seed})",
        traced=traced,
        parity_shapes=(traced, (1, *shape), (3, *shape)),
        dynamic_axes={0: "N"},
        min_hw=None,
        op="nonlocal",
        params=params.model_dump(mode="json"),
    )


POOL_OP_MODELS: dict[str, str | None] = {"netvlad_head": DEFAULT_MODEL, "nonlocal_pool": None}
"""Pool-op entries and the zoo model whose weights they take (None: seeded on their own)."""


def available_models() -> list[str]:
    """Every name ``export_repository`` accepts."""
    return sorted([*list_models(), *POOL_OP_MODELS])


def make_job(name: str, weights: Mapping[str, Path]) -> ExportJob:
    """Build the module for ``name`` (seeded, or from ``weights[name]``) and its job."""
    if name == "nonlocal_pool":
        return nonlocal_job()
    if name == "netvlad_head":
        return netvlad_head_job(build_model(DEFAULT_MODEL, weights=weights.get(DEFAULT_MODEL)))
    return zoo_job(build_model(name, weights=weights.get(name)))


def check_request(models: Sequence[str], weights: Mapping[str, Path]) -> None:
    """Refuse unknown names and weights for models that take none, before any work."""
    known = available_models()
    if not models:
        raise RepositoryUsageError("no models to export")
    unknown = [m for m in models if m not in known]
    if unknown:
        raise RepositoryUsageError(f"unknown model(s) {unknown}; expected some of {known}")
    if len(set(models)) != len(models):
        raise RepositoryUsageError(f"a model is named twice in {list(models)}")
    for name, path in weights.items():
        if name in POOL_OP_MODELS:
            source = POOL_OP_MODELS[name]
            follow = f"it takes {source}'s weights" if source else "it is seeded"
            raise RepositoryUsageError(f"--weights {name}=...: {follow}")
        head_source = name == DEFAULT_MODEL and "netvlad_head" in models
        if name not in models and not head_source:
            raise RepositoryUsageError(f"--weights {name}=... names a model not being exported")
        if not Path(path).is_file():
            raise RepositoryUsageError(f"--weights {name}={path}: no such file")


# Export and gate ---------------------------------------------------------------------------


def fp16_variant(
    job: ExportJob, model: onnx.ModelProto, entry: ModelEntry
) -> tuple[str, onnx.ModelProto, ModelEntry]:
    """The float16 copy of an exported model, gated by cosine against the torch fp32 model
    on the same parity inputs; its name, model and entry (still without path digest)."""
    name = fp16_name(job.name)
    half = to_fp16(model)
    for prop in half.metadata_props:
        if prop.key == "poolserve.model":
            prop.value = name
    try:
        report = check_fp16(half, torch_reference(job.module), job.parity_shapes, PROVIDERS)
    except ExportError as exc:
        raise ExportError(f"{name}: the fp16 gate refused the model: {exc}") from exc
    parity = ParityRecord(
        shapes=report.shapes,
        max_abs_error=report.max_abs_error,
        tolerance=MAX_ABS_ERROR,
        providers=PROVIDERS,
        min_cosine=report.min_cosine,
        min_cosine_bound=MIN_COSINE,
    )
    update = {
        "path": f"{name}/1/model.onnx",
        "ir_version": half.ir_version,
        "inputs": tuple(tensor_spec(v) for v in half.graph.input),
        "outputs": tuple(tensor_spec(v) for v in half.graph.output),
        "weights": f"{job.weights} (converted to float16)",
        "parity": parity,
    }
    return name, half, entry.model_copy(update=update)


def run_job(job: ExportJob, prefer: Prefer) -> tuple[onnx.ModelProto, ModelEntry]:
    """Export, rename the output, run the gate; the entry still lacks path, sha and size."""
    try:
        exported = export_module(
            job.module,
            torch.randn(job.traced, generator=torch.Generator().manual_seed(0)),
            job.dynamic_axes,
            prefer=prefer,
            min_size=job.min_hw or 1,
        )
    except Exception as exc:  # torch raises many kinds; the CLI needs one
        raise ExportError(f"{job.name}: export failed: {type(exc).__name__}: {exc}") from exc
    model = exported.model
    rename_single_output(model, OUTPUT_NAME)
    model.metadata_props.add(key="poolserve.model", value=job.name)
    axes = {model.graph.input[0].name: sorted(job.dynamic_axes)}
    try:
        report = check_artifact(
            model,
            torch_reference(job.module),
            job.parity_shapes,
            axes,
            job.traced,
            providers=PROVIDERS,
        )
    except ExportError as exc:
        raise ExportError(f"{job.name}: the parity gate refused the model: {exc}") from exc
    lowerings = tuple(
        LoweringRecord(op=n.op, kind=n.kind, params=json.loads(n.params)) for n in exported.lowered
    )
    entry = ModelEntry(
        kind=job.kind,
        path=f"{job.name}/1/model.onnx",
        sha256="0" * 64,
        bytes=0,
        opset=opset_of(model),
        ir_version=model.ir_version,
        inputs=tuple(tensor_spec(v) for v in model.graph.input),
        outputs=tuple(tensor_spec(v) for v in model.graph.output),
        min_hw=job.min_hw,
        weights=job.weights,
        cfg=job.cfg,
        op=job.op,
        params=job.params,
        lowerings=lowerings,
        parity=ParityRecord(
            shapes=report.shapes,
            max_abs_error=report.max_abs_error,
            tolerance=report.tolerance,
            providers=PROVIDERS,
        ),
    )
    return model, entry


def rename_single_output(model: onnx.ModelProto, name: str) -> None:
    """Name the graph's only output ``name`` (torch calls it after the last op, ``div_2``)."""
    graph = model.graph
    if len(graph.output) != 1:
        return
    old = graph.output[0].name
    for node in graph.node:
        node.output[:] = [name if o == old else o for o in node.output]
        node.input[:] = [name if i == old else i for i in node.input]
    for value in graph.value_info:
        if value.name == old:
            value.name = name
    graph.output[0].name = name


def tensor_spec(value: onnx.ValueInfoProto) -> TensorSpec:
    """Name, NumPy dtype name and dims (ints fixed, strings symbolic) of a graph value."""
    tensor = value.type.tensor_type
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
    dims: list[int | str] = []
    for i, dim in enumerate(tensor.shape.dim):
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or f"d{i}")
    return TensorSpec(name=value.name, dtype=dtype, shape=tuple(dims))


def opset_of(model: onnx.ModelProto) -> int:
    return next(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))


# Writing -----------------------------------------------------------------------------------


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file beside ``path``, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_model(out: Path, name: str, model: onnx.ModelProto, entry: ModelEntry) -> ModelEntry:
    """Write ``<name>/1/model.onnx`` and ``<name>/config.pbtxt``; the entry with its digest."""
    path = out / entry.path
    write_atomic(path, model.SerializeToString())
    write_atomic(out / name / "config.pbtxt", config_pbtxt(name, entry).encode())
    return entry.model_copy(update={"sha256": sha256_file(path), "bytes": path.stat().st_size})


def producer() -> dict[str, str]:
    names = {"poolserve": "poolserve", "torch": "torch", "onnx": "onnx"}
    versions = {key: importlib.metadata.version(dist) for key, dist in names.items()}
    import onnxruntime  # only for its version; sessions come from export.runtime.sessions

    versions["onnxruntime"] = str(onnxruntime.__version__)
    return versions


def pick_default(models: Sequence[str], entries: Mapping[str, ModelEntry]) -> str | None:
    """``DEFAULT_MODEL`` when exported, else the first descriptor exported, else None."""
    if DEFAULT_MODEL in entries:
        return DEFAULT_MODEL
    return next((m for m in models if entries[m].kind == "descriptor"), None)


def export_repository(
    out: Path,
    models: Sequence[str] | None = None,
    prefer: Prefer = "standard",
    weights: Mapping[str, Path] | None = None,
    *,
    fp16: bool = False,
    on_model: Callable[[ModelReport], None] | None = None,
) -> Manifest:
    """Export ``models`` (``DEFAULT_MODELS`` when None) into the repository folder ``out``.

    Args:
        out: the repository folder; created if missing. Model folders of other names are
            left alone; the new manifest lists exactly the models of this call.
        models: names from ``available_models()``.
        prefer: lowering preference for the pooling layers (``standard`` or ``custom``).
        weights: model name -> checkpoint file; other models get their seeded init.
            ``netvlad_head`` follows the weights of ``netvlad_poolformer_s12``.
        fp16: also write ``<name>_fp16``, a float16 copy with float32 inputs and outputs,
            for each descriptor and classifier (not pool ops), gated by cosine to torch.
        on_model: called after each model is written (the CLI prints a line).

    Raises:
        RepositoryUsageError: unknown model names or misplaced weights (nothing written).
        ExportError: a model failed to export or failed the parity gate; no manifest is
            left in ``out``.
        CheckpointError: a weights file cannot be read or does not fit.
    """
    names = list(DEFAULT_MODELS if models is None else models)
    weights = dict(weights or {})
    check_request(names, weights)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_NAME).unlink(missing_ok=True)  # the old one may describe files we replace
    entries: dict[str, ModelEntry] = {}
    for name in names:
        start = time.perf_counter()
        job = make_job(name, weights)
        model, entry = run_job(job, prefer)
        entries[name] = write_model(out, name, model, entry)
        if on_model is not None:
            on_model(ModelReport(name, time.perf_counter() - start, entries[name]))
        if fp16 and job.kind != "pool_op":
            start = time.perf_counter()
            half_name, half, half_entry = fp16_variant(job, model, entry)
            entries[half_name] = write_model(out, half_name, half, half_entry)
            if on_model is not None:
                seconds = time.perf_counter() - start
                on_model(ModelReport(half_name, seconds, entries[half_name]))
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        created_utc=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        producer=producer(),
        opset=OPSET,
        ir_version=IR_VERSION,
        prefer=prefer,
        default_model=pick_default(names, entries),
        models=entries,
    )
    write_atomic(out / MANIFEST_NAME, (manifest.model_dump_json(indent=2) + "\n").encode())
    return manifest
