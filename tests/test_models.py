import math

import pytest
import torch

from convbias.specs import ModelSpec, Schedule
from convbias.models import ARCHS, build_model, conv_layers, init_model, initialize, kaiming_std, sequential_layers

CONVS = {"vgg11": 8, "vgg13": 10, "vgg16": 13, "vgg19": 16, "alexnet": 5, "lenet": 6}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("channels", [1, 3])
def test_layer_counts_and_shapes(arch, channels):
    size = 64 if arch == "alexnet" else 32
    model = initialize(build_model(ModelSpec(arch, width=0.25), channels, 7, size))
    assert len(conv_layers(model)) == CONVS[arch]
    x = torch.randn(2, channels, size, size)
    assert model(x).shape == (2, 7)
    model.eval()
    y = x
    for layer in sequential_layers(model):
        y = layer(y)
    assert torch.allclose(y, model(x))


def test_width_multiplier():
    model = build_model(ModelSpec("vgg19", width=0.125), 3, 10, 32)
    assert [c.out_channels for _, c in conv_layers(model)][:3] == [8, 8, 16]


def test_kaiming_init_std_and_zero_bias():
    torch.manual_seed(0)
    model = initialize(build_model(ModelSpec("vgg19", width=0.5), 3, 10, 32), "kaiming_normal")
    for _, conv in conv_layers(model):
        assert conv.weight.std().item() == pytest.approx(kaiming_std(conv), rel=0.05)
        assert torch.count_nonzero(conv.bias) == 0


def test_same_seed_same_init():
    def weights(seed):
        torch.manual_seed(seed)
        return initialize(build_model(ModelSpec("lenet"), 1, 10, 28)).state_dict()
    a, b, c = weights(3), weights(3), weights(4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["features.0.weight"], c["features.0.weight"])


def test_schedules():
    assert Schedule("exponential").lr(0.01, 1) == pytest.approx(0.01)
    assert Schedule("exponential").lr(0.01, 26) == pytest.approx(0.001)
    assert Schedule("exponential", gamma=0.95).lr(0.01, 3) == pytest.approx(0.01 * 0.95**2)
    step = Schedule("step", gamma=0.1, step_size=25)
    assert [step.lr(0.01, e) for e in (1, 25, 26, 51)] == pytest.approx([0.01, 0.01, 0.001, 0.0001])
    assert Schedule("constant").lr(0.01, 99) == 0.01
    assert math.isclose(Schedule().gamma, 10 ** (-1 / 25))


@pytest.mark.parametrize("arch", ["vgg19", "alexnet"])
def test_torchvision_head_follows_the_width(arch):
    """The head's first Linear takes the pooled maps of the last conv, whatever the width."""
    model = build_model(ModelSpec(arch, width=0.0625, head="torchvision"), 3, 10, 224)
    last = [m for m in model.features if isinstance(m, torch.nn.Conv2d)][-1].out_channels
    first = next(m for m in model.classifier if isinstance(m, torch.nn.Linear))
    assert first.in_features == last * (49 if arch == "vgg19" else 36)
    assert model(torch.zeros(2, 3, 224, 224)).shape == (2, 10)


def _fans(m):
    receptive = math.prod(m.kernel_size) if isinstance(m, torch.nn.Conv2d) else 1
    return m.weight.shape[1] * receptive, m.weight.shape[0] * receptive


@pytest.mark.parametrize("scheme,std", [("kaiming_normal", None), ("torchvision_vgg", None), ("normal", 0.01),
                                        ("normal", 0.05), ("xavier_uniform", None), ("torchvision_default", None)])
def test_every_init_scheme_has_its_distribution_on_convs_and_linears(scheme, std):
    """Std, bounds and gain of each scheme, from its formula (fans computed here), on every layer."""
    torch.manual_seed(0)
    model = build_model(ModelSpec("vgg11", width=0.5, hidden=256), 3, 10, 32)
    initialize(model, scheme, std if std is not None else 0.01)
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 8 + 3
    for m in layers:
        w, (fan_in, fan_out) = m.weight.detach().double(), _fans(m)
        if scheme == "kaiming_normal" or (scheme == "torchvision_vgg" and w.dim() == 4):
            expected_std, bound = math.sqrt(2.0 / fan_out), None  # N(0, 2 / fan_out): He et al., ReLU, fan_out
        elif scheme == "torchvision_vgg":  # torchvision's VGG: N(0, 0.01) on linear layers
            expected_std, bound = 0.01, None
        elif scheme == "normal":
            expected_std, bound = std, None
        elif scheme == "xavier_uniform":  # U(±√2·√(6 / (fan_in + fan_out))): Glorot with ReLU gain
            bound = math.sqrt(2.0) * math.sqrt(6.0 / (fan_in + fan_out))
            expected_std = bound / math.sqrt(3.0)
        else:  # PyTorch's default: U(±1/√fan_in) for weights and biases
            bound = 1.0 / math.sqrt(fan_in)
            expected_std = bound / math.sqrt(3.0)
        assert w.std().item() == pytest.approx(expected_std, rel=0.06 if w.numel() > 2000 else 0.2)
        assert abs(w.mean().item()) < 4 * expected_std / math.sqrt(w.numel())
        if bound is not None:
            assert w.abs().max().item() <= bound and w.abs().max().item() > 0.95 * bound
        if scheme == "torchvision_default":
            assert m.bias.abs().max().item() <= bound and torch.count_nonzero(m.bias) == m.bias.numel()
        else:
            assert torch.count_nonzero(m.bias) == 0


def test_unknown_init_is_refused():
    with pytest.raises(ValueError, match="unknown init 'he'"):
        initialize(build_model(ModelSpec("lenet"), 1, 10, 28), "he")


def test_alexnet_and_tiny_widths_keep_kernels_and_at_least_one_filter():
    model = build_model(ModelSpec("alexnet", width=0.25, head="torchvision", dropout=0.3), 3, 10, 224)
    convs = [m for _, m in conv_layers(model)]
    assert [c.out_channels for c in convs] == [16, 48, 96, 64, 64]
    assert [c.kernel_size for c in convs] == [(11, 11), (5, 5), (3, 3), (3, 3), (3, 3)]
    assert [c.stride for c in convs] == [(4, 4), (1, 1), (1, 1), (1, 1), (1, 1)]
    assert all(c.bias is not None for c in convs)
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [0.3, 0.3]
    vgg = build_model(ModelSpec("vgg11", width=0.3, head="torchvision", dropout=0.2), 3, 10, 32)
    assert [m.p for m in vgg.modules() if isinstance(m, torch.nn.Dropout)] == [0.2, 0.2]
    tiny = build_model(ModelSpec("vgg11", width=1 / 100), 3, 10, 32)
    assert [c.out_channels for _, c in conv_layers(tiny)] == [1, 1, 3, 3, 5, 5, 5, 5]  # round(v / 100), at least 1


def test_normal_init_defaults_to_std_one_hundredth():
    torch.manual_seed(0)
    model = initialize(build_model(ModelSpec("vgg11", width=0.5), 3, 10, 32), "normal")
    assert conv_layers(model)[-1][1].weight.std().item() == pytest.approx(0.01, rel=0.05)


def test_the_compact_head_is_two_hidden_relu_layers_with_dropout():
    model = build_model(ModelSpec("lenet", width=0.5, hidden=40, dropout=0.25), 1, 7, 28)
    kinds = [type(m).__name__ for m in model.classifier]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    linears = [m for m in model.classifier if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32 * 3 * 3, 20), (20, 20), (20, 7)]
    assert [m.p for m in model.classifier if isinstance(m, torch.nn.Dropout)] == [0.25, 0.25]


def test_a_runs_model_at_epoch_0_follows_its_spec_its_dataset_and_its_seed():
    """init_model: architecture, input channels, image size and classes from the dataset's meta;
    the init scheme and std from the spec; the weights from the seed alone."""
    from convbias.specs import TrainSpec
    from convbias.data.dataset import DatasetMeta

    meta = DatasetMeta("m", 7, (28, 28, 1), 100, 10, 0.1, 0, False, "unit", (0.0,), (1.0,))
    spec = TrainSpec(model=ModelSpec("lenet", hidden=32), init="normal", init_std=0.05, epochs=1)
    model = init_model(spec, meta, 3)
    torch.manual_seed(3)
    expected = initialize(build_model(ModelSpec("lenet", hidden=32), 1, 7, 28), "normal", 0.05)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 7)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), expected.state_dict().values()))
    assert model.features[0].weight.std().item() == pytest.approx(0.05, rel=0.3)
    other = init_model(spec, meta, 4)
    assert not torch.equal(other.features[0].weight, model.features[0].weight)
    torch.manual_seed(99)  # the global random state before the call does not matter
    assert torch.equal(init_model(spec, meta, 3).features[0].weight, model.features[0].weight)


def test_lenet_head_is_the_authors():
    """AdaptiveAvgPool 3×3, then 576 → 120 → 84 → classes with dropout (arch lenet only)."""
    model = build_model(ModelSpec("lenet", head="lenet", dropout=0.5), 1, 10, 28)
    assert model.avgpool.output_size == (3, 3)
    linears = [m for m in model.classifier if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(576, 120), (120, 84), (84, 10)]
    assert [m.p for m in model.classifier if isinstance(m, torch.nn.Dropout)] == [0.5, 0.5]
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    half = build_model(ModelSpec("lenet", width=0.5, head="lenet"), 3, 100, 32)
    assert half.classifier[0].in_features == 32 * 9 and half(torch.zeros(1, 3, 32, 32)).shape == (1, 100)
    with pytest.raises(ValueError, match="head 'lenet' exists for arch lenet only"):
        build_model(ModelSpec("vgg11", head="lenet"), 3, 10, 32)
