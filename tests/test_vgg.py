"""VGG16 trunk: torchvision's module indices, conv5_3 before ReLU, a plain functional reference."""

import torch
import torch.nn.functional as F
from torch import nn

from models.vgg import vgg16_trunk
from tests.reference import TORCHVISION_CONVS

POOLS = (4, 9, 16, 23)  # torchvision vgg16().features' max pools


def test_module_indices_match_torchvision_features() -> None:
    trunk = vgg16_trunk()
    assert len(trunk) == 29  # features[:-2]: relu5_3 (29) and pool5 (30) dropped
    for idx, cin, cout in TORCHVISION_CONVS:
        conv = trunk[idx]
        assert isinstance(conv, nn.Conv2d)
        assert (conv.in_channels, conv.out_channels) == (cin, cout)
        assert (conv.kernel_size, conv.padding) == ((3, 3), (1, 1))
    for idx in POOLS:
        assert isinstance(trunk[idx], nn.MaxPool2d)
    relus = [i for i, m in enumerate(trunk) if isinstance(m, nn.ReLU)]
    assert relus == [i + 1 for i, _, _ in TORCHVISION_CONVS[:-1]]  # none after conv5_3


def test_state_dict_keys_are_pytorch_netvlad_encoder_keys() -> None:
    expected: dict[str, tuple[int, ...]] = {}
    for idx, cin, cout in TORCHVISION_CONVS:
        expected[f"{idx}.weight"] = (cout, cin, 3, 3)
        expected[f"{idx}.bias"] = (cout,)
    got = {k: tuple(v.shape) for k, v in vgg16_trunk().state_dict().items()}
    assert got == expected
    # The published parameter count of VGG16's convolutional part.
    assert sum(v.numel() for v in vgg16_trunk().parameters()) == 14_714_688


def reference_trunk(x: torch.Tensor, sd: dict) -> torch.Tensor:
    """conv3x3+ReLU blocks with 2x2 max pools, no ReLU after the last conv."""
    for n, (idx, _, _) in enumerate(TORCHVISION_CONVS):
        x = F.conv2d(x, sd[f"{idx}.weight"], sd[f"{idx}.bias"], padding=1)
        if n < len(TORCHVISION_CONVS) - 1:
            x = F.relu(x)
        if idx + 2 in POOLS:
            x = F.max_pool2d(x, 2)
    return x


def test_forward_matches_functional_reference_and_is_pre_relu() -> None:
    trunk = vgg16_trunk(seed=3).eval()
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        out = trunk(x)
        ref = reference_trunk(x, trunk.state_dict())
    assert out.shape == (2, 512, 2, 3)  # stride 16
    torch.testing.assert_close(out, ref)
    assert (out < 0).any()  # conv5_3's raw response, as pytorch-NetVlad reads it


def test_seeded_init_is_deterministic_and_leaves_global_rng_alone() -> None:
    state = torch.get_rng_state()
    a, b, c = vgg16_trunk(seed=1), vgg16_trunk(seed=1), vgg16_trunk(seed=2)
    assert torch.equal(torch.get_rng_state(), state)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key])
    assert not torch.equal(a.state_dict()["28.weight"], c.state_dict()["28.weight"])


def test_init_is_kaiming_fan_out_with_zero_bias() -> None:
    sd = vgg16_trunk(seed=0).state_dict()
    for idx, _, cout in TORCHVISION_CONVS:
        expected_std = (2.0 / (cout * 9)) ** 0.5
        assert abs(sd[f"{idx}.weight"].std().item() / expected_std - 1) < 0.1
        assert torch.count_nonzero(sd[f"{idx}.bias"]) == 0
