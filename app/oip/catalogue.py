"""The models poolserve serves over the protocol, and their metadata.

Three families, each name one URL path segment:

- ``<model>``: every image model of the repository. Input ``IMAGE`` (BYTES, one encoded
  JPEG/PNG/WebP per element), preprocessed as /descriptor does; output ``DESCRIPTOR`` (or
  ``LOGITS`` for a classifier), FP32 [-1, D].
- ``pool.<op>``: every registered /pool op. Inputs as the op's registry entry names them
  (``x``, ``indices``, ``y``, ``samples``); outputs ``y`` and, when the op can, ``indices``;
  the op's params in the request's ``parameters``.
- ``onnx.<model>``: the repository's ONNX graphs themselves, on preprocessed tensors.

Everything here is read from the registry and the manifest; nothing names an op.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from app.inference.sessions import LoadedModel
from app.oip.datatypes import BYTES, protocol_datatype
from export.runtime.manifest import TensorSpec as EntryTensor
from models.pooling import get_pool_spec, list_pools
from models.pooling.examples import example_inputs, example_shape
from models.pooling.registry import PoolSpec, TensorSpec

SERVER_NAME = "poolserve"
SERVER_VERSION = "0.1.0"
VERSION = "1"
"""Every model has one version, the repository's ``<model>/1/``."""
POOL_PREFIX = "pool."
ONNX_PREFIX = "onnx."
FLOATS = ("FP32", "FP16")
IMAGE_OUTPUTS = {"descriptor": "DESCRIPTOR", "classification": "LOGITS"}
Family = Literal["image", "pool", "onnx"]


@dataclass(frozen=True)
class TensorMeta:
    name: str
    datatype: str
    """What the metadata advertises; ``accepts`` lists every datatype an input takes."""
    shape: tuple[int, ...]
    """-1 where the size varies."""
    accepts: tuple[str, ...] = ()

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class OipModel:
    name: str
    family: Family
    target: str
    """The loaded repository model (image, onnx) or the op (pool) a request runs."""
    platform: str
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]

    def metadata(self) -> dict[str, object]:
        return {
            "name": self.name,
            "versions": [VERSION],
            "platform": self.platform,
            "inputs": [t.as_json() for t in self.inputs],
            "outputs": [t.as_json() for t in self.outputs],
        }

    def input(self, name: str) -> TensorMeta | None:
        return next((t for t in self.inputs if t.name == name), None)


def build_catalogue(models: Mapping[str, LoadedModel]) -> dict[str, OipModel]:
    """Every model the protocol serves, by name."""
    catalogue = [_pool_model(get_pool_spec(op)) for op in list_pools()]
    for name, loaded in sorted(models.items()):
        if loaded.preprocess is not None:
            catalogue.append(_image_model(name, loaded))
        catalogue.append(_onnx_model(name, loaded))
    return {model.name: model for model in catalogue}


def _image_model(name: str, loaded: LoadedModel) -> OipModel:
    output = IMAGE_OUTPUTS.get(loaded.entry.kind, "OUTPUT")
    dim = loaded.dim if loaded.dim is not None else -1
    return OipModel(
        name,
        "image",
        name,
        "poolserve_image",
        (TensorMeta("IMAGE", BYTES, (-1,), (BYTES,)),),
        (TensorMeta(output, "FP32", (-1, dim)),),
    )


def _onnx_model(name: str, loaded: LoadedModel) -> OipModel:
    inputs = tuple(_entry_tensor(t, accepts=True) for t in loaded.entry.inputs)
    outputs = tuple(_entry_tensor(t) for t in loaded.entry.outputs)
    return OipModel(ONNX_PREFIX + name, "onnx", name, "onnxruntime_onnx", inputs, outputs)


def _entry_tensor(tensor: EntryTensor, accepts: bool = False) -> TensorMeta:
    datatype = protocol_datatype(tensor.dtype)
    dims = tuple(d if isinstance(d, int) else -1 for d in tensor.shape)
    return TensorMeta(tensor.name, datatype, dims, (datatype,) if accepts else ())


def _pool_model(spec: PoolSpec) -> OipModel:
    inputs = tuple(_pool_input(t) for t in spec.inputs)
    rank = _output_rank(spec)
    outputs = [TensorMeta("y", "FP32", (-1,) * rank)]
    if spec.indices:
        outputs.append(TensorMeta("indices", "INT64", (-1,) * rank))
    return OipModel(
        POOL_PREFIX + spec.name, "pool", spec.name, "poolserve_pool", inputs, tuple(outputs)
    )


def _pool_input(tensor: TensorSpec) -> TensorMeta:
    dims = tuple(d if isinstance(d, int) else -1 for d in tensor.dims)
    if tensor.dtype == "int64":
        return TensorMeta(tensor.name, "INT64", dims, ("INT64",))
    return TensorMeta(tensor.name, "FP32", dims, FLOATS)


def _output_rank(spec: PoolSpec) -> int:
    """The rank of the op's output, from its first example (no op's rank depends on its
    params' values)."""
    params = spec.params(**spec.examples[0])
    x_shape = example_shape(spec.name, params, (1, 4, 8, 8))
    arrays = example_inputs(spec.name, params, x_shape, np.random.default_rng(0))
    return len(params.output_shape(*(a.shape for a in arrays.values())))
