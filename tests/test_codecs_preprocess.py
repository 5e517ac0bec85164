"""app.codecs.preprocess against the torch reference, models.transforms.image_to_tensor.

The NumPy twin performs the same Pillow calls and the same float32 operations in the same
order, so the tolerance is zero: every test asserts bit-identical results.
"""

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from app.codecs.preprocess import Preprocessor
from models.transforms import image_to_tensor
from models.zoo import InputPolicy, get_model_cfg, list_models

CAFFE_MEAN = (123.68, 116.779, 103.939)


def manifest_dict(policy: InputPolicy) -> dict:
    """The policy as the manifest stores it: dataclasses.asdict through JSON (lists)."""
    as_json: dict = json.loads(json.dumps(dataclasses.asdict(policy)))
    return as_json


def image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def assert_same_as_torch(policy: InputPolicy, img: Image.Image) -> None:
    expected = image_to_tensor(policy, img).numpy()
    pre = Preprocessor.from_dict(manifest_dict(policy))
    got = pre(img)
    assert got.dtype == np.float32
    assert got.shape == expected.shape == (3, *pre.output_hw(*img.size))
    np.testing.assert_array_equal(got, expected)  # tolerance 0: bit-identical


RULES = [
    {"resize": "keep"},
    {"resize": "exact", "size": (48, 64)},
    {"resize": "exact", "size": (31, 17)},
    {"resize": "shorter_side", "shorter_side": 40},
    {"resize": "shorter_side", "shorter_side": 40, "crop": (32, 32)},
    {"resize": "shorter_side", "shorter_side": 37, "crop": (30, 21)},  # odd crop offsets
]
RANGES = [
    {"value_range": "0-1"},
    {"value_range": "0-255", "mean": CAFFE_MEAN, "std": (1.0, 1.0, 1.0)},
    {"value_range": "0-255", "mean": CAFFE_MEAN, "std": (58.395, 57.12, 57.375)},
]


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("values", RANGES)
@pytest.mark.parametrize("size", [(50, 37), (37, 50), (45, 45)])  # landscape, portrait, square
def test_bit_identical_to_input_policy(rule, interpolation, values, size):
    policy = InputPolicy(**rule, interpolation=interpolation, **values)
    width, height = size
    assert_same_as_torch(policy, image(width, height, seed=width))


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_policy(name):
    policy = get_model_cfg(name).preprocess
    assert_same_as_torch(policy, image(83, 61, seed=1))


def test_non_rgb_input_is_converted_like_the_reference():
    grey = image(40, 30).convert("L")
    assert_same_as_torch(InputPolicy(resize="exact", size=(20, 25)), grey)


def test_writes_into_a_batch_slot_without_a_new_array():
    pre = Preprocessor.from_dict({"resize": "exact", "size": [24, 32]})
    batch = np.full((3, 3, 24, 32), np.nan, dtype=np.float32)
    img = image(50, 40)
    result = pre(img, out=batch[1])
    assert np.shares_memory(result, batch)
    np.testing.assert_array_equal(batch[1], pre(img))
    assert np.isnan(batch[0]).all()
    assert np.isnan(batch[2]).all()


def test_out_of_the_wrong_shape_or_dtype_is_refused():
    pre = Preprocessor.from_dict({"resize": "exact", "size": [24, 32]})
    with pytest.raises(ValueError, match="out must be float32"):
        pre(image(50, 40), out=np.empty((3, 32, 24), np.float32))
    with pytest.raises(ValueError, match="out must be float32"):
        pre(image(50, 40), out=np.empty((3, 24, 32), np.float64))


@pytest.mark.parametrize(
    ("policy", "width", "height", "expected"),
    [
        ({"resize": "keep"}, 50, 37, (37, 50)),
        ({"resize": "exact", "size": [480, 640]}, 50, 37, (480, 640)),
        ({"resize": "shorter_side", "shorter_side": 10}, 50, 37, (10, 13)),  # int(10*50/37)
        ({"resize": "shorter_side", "shorter_side": 10}, 37, 50, (13, 10)),
        ({"resize": "shorter_side", "shorter_side": 248, "crop": [224, 224]}, 9, 5, (224, 224)),
    ],
)
def test_output_hw(policy, width, height, expected):
    assert Preprocessor.from_dict(policy).output_hw(width, height) == expected


def test_defaults_match_input_policy():
    assert dataclasses.asdict(InputPolicy()) == dataclasses.asdict(
        Preprocessor.from_dict({}).policy
    )


@pytest.mark.parametrize(
    "policy",
    [
        {"resize": "stretch"},
        {"resize": "exact"},
        {"resize": "keep", "size": [2, 2]},
        {"resize": "shorter_side"},
        {"resize": "shorter_side", "shorter_side": 0},
        {"resize": "shorter_side", "shorter_side": True},
        {"resize": "shorter_side", "shorter_side": 10, "crop": [12, 8]},
        {"resize": "exact", "size": [10, 10], "crop": [8, 8]},
        {"resize": "exact", "size": [10, True]},
        {"resize": "exact", "size": [10]},
        {"interpolation": "nearest"},
        {"value_range": "0-65535"},
        {"std": [1.0, 0.0, 1.0]},
        {"mean": [0.5, 0.5]},
        {"unknown": 1},
    ],
)
def test_bad_policies_are_refused(policy):
    with pytest.raises(ValueError, match="preprocess"):
        Preprocessor.from_dict(policy)
