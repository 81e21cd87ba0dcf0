"""Models of the paper (torchvision's VGG and AlexNet, the authors' 6-conv LeNet) and their inits.

Every model has torchvision's layout — ``features`` (convs, ReLUs, pools), ``avgpool``,
flatten, ``classifier`` — so torchvision state dicts load and :func:`sequential_layers`
can run any suffix of the network (re-initialization reuses the prefix's activations).
"""

from __future__ import annotations

import math
import torch
from torch import nn
from torchvision.models import AlexNet
from torchvision.models.vgg import VGG, cfgs, make_layers

from .specs import ModelSpec

VGG_CONFIGS = {"vgg11": cfgs["A"], "vgg13": cfgs["B"], "vgg16": cfgs["D"], "vgg19": cfgs["E"]}
LENET_CONFIG = [6, 6, "M", 16, 16, "M", 64, 64, "M"]  # the authors' 6-conv LeNet
ALEXNET_FILTERS = [64, 192, 384, 256, 256]  # torchvision's AlexNet features
ARCHS = (*VGG_CONFIGS, "alexnet", "lenet")
INITS = ("kaiming_normal", "torchvision_vgg", "normal", "xavier_uniform", "torchvision_default")
HEADS = ("compact", "torchvision", "lenet")


class ConvNet(nn.Module):
    """torchvision's feature/avgpool/classifier layout, for the compact and the LeNet heads."""

    def __init__(self, features: nn.Sequential, avgpool: nn.Module, classifier: nn.Sequential):
        super().__init__()
        self.features, self.avgpool, self.classifier = features, avgpool, classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _adapt(features: nn.Sequential, in_channels: int, width: float) -> nn.Sequential:
    """Rebuild the convs of ``features`` for ``in_channels`` inputs and ``width`` × the filters."""
    layers, channels = [], in_channels
    for m in features:
        if isinstance(m, nn.Conv2d):
            out = max(1, round(m.out_channels * width))
            m = nn.Conv2d(channels, out, m.kernel_size, m.stride, m.padding, bias=m.bias is not None)
            channels = out
        layers.append(m)
    return nn.Sequential(*layers)


def filter_counts(arch: str, width: float = 1.0) -> list[int]:
    """The filters of each conv layer of ``arch`` at ``width``, in forward order, without building it."""
    if arch in VGG_CONFIGS:
        base = [v for v in VGG_CONFIGS[arch] if v != "M"]
    elif arch == "lenet":
        base = [v for v in LENET_CONFIG if v != "M"]
    elif arch == "alexnet":
        base = ALEXNET_FILTERS
    else:
        raise ValueError(f"unknown model arch {arch!r}; known: {', '.join(ARCHS)}")
    return [max(1, round(v * width)) for v in base]


def _features(arch: str, in_channels: int, width: float) -> nn.Sequential:
    if arch in VGG_CONFIGS:
        cfg = VGG_CONFIGS[arch]
    elif arch == "lenet":
        cfg = LENET_CONFIG
    elif arch == "alexnet":
        return _adapt(AlexNet().features, in_channels, width)
    else:
        raise ValueError(f"unknown model arch {arch!r}; known: {', '.join(ARCHS)}")
    scaled = [v if v == "M" else max(1, round(v * width)) for v in cfg]
    return _adapt(make_layers(scaled), in_channels, 1.0)


def build_model(spec: ModelSpec, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """The model of ``spec`` for ``in_channels`` × ``image_size``² inputs (weights not yet initialized)."""
    features = _features(spec.arch, in_channels, spec.width)
    if spec.head == "torchvision":
        if spec.arch == "alexnet":
            model = AlexNet(num_classes=num_classes, dropout=spec.dropout)
        elif spec.arch in VGG_CONFIGS:
            model = VGG(features, num_classes=num_classes, init_weights=False, dropout=spec.dropout)
        else:
            raise ValueError("head 'torchvision' exists for vgg* and alexnet only; use head: compact")
        model.features = features
        # a width ≠ 1 changes the channels entering the head's first Linear (7×7 / 6×6 pooled maps)
        channels = [m for m in features if isinstance(m, nn.Conv2d)][-1].out_channels
        i, first = next((i, m) for i, m in enumerate(model.classifier) if isinstance(m, nn.Linear))
        inputs = channels * math.prod(model.avgpool.output_size)
        if first.in_features != inputs:
            model.classifier[i] = nn.Linear(inputs, first.out_features)
        return model
    if spec.head == "lenet":
        if spec.arch != "lenet":
            raise ValueError("head 'lenet' exists for arch lenet only; use head: compact or torchvision")
        # the authors' LeNet head: 3×3 average pool, 576 → 120 → 84 → classes with dropout
        channels = [m for m in features if isinstance(m, nn.Conv2d)][-1].out_channels
        classifier = nn.Sequential(
            nn.Linear(channels * 9, 120), nn.ReLU(True), nn.Dropout(spec.dropout),
            nn.Linear(120, 84), nn.ReLU(True), nn.Dropout(spec.dropout),
            nn.Linear(84, num_classes),
        )
        return ConvNet(features, nn.AdaptiveAvgPool2d((3, 3)), classifier)
    if spec.head != "compact":
        raise ValueError(f"unknown head {spec.head!r}; known: {', '.join(HEADS)}")
    with torch.no_grad():
        flat = features(torch.zeros(1, in_channels, image_size, image_size)).numel()
    hidden = max(1, round(spec.hidden * spec.width))
    classifier = nn.Sequential(
        nn.Linear(flat, hidden), nn.ReLU(True), nn.Dropout(spec.dropout),
        nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(spec.dropout),
        nn.Linear(hidden, num_classes),
    )
    return ConvNet(features, nn.Identity(), classifier)


def initialize(model: nn.Module, scheme: str = "kaiming_normal", std: float = 0.01) -> nn.Module:
    """Initialize every conv and linear layer with ``scheme``; biases are zero (except torchvision_default).

    ``torchvision_vgg`` is torchvision's VGG init: Kaiming normal (fan_out, ReLU) on convs,
    N(0, 0.01) on linear layers; ``torchvision_default`` is PyTorch's own module init (what
    torchvision's AlexNet gets)."""
    if scheme not in INITS:
        raise ValueError(f"unknown init {scheme!r}; known: {', '.join(INITS)}")
    for m in model.modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        if scheme == "kaiming_normal" or (scheme == "torchvision_vgg" and isinstance(m, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif scheme == "torchvision_vgg":
            nn.init.normal_(m.weight, 0.0, 0.01)
        elif scheme == "normal":
            nn.init.normal_(m.weight, 0.0, std)
        elif scheme == "xavier_uniform":
            nn.init.xavier_uniform_(m.weight, gain=nn.init.calculate_gain("relu"))
        else:
            m.reset_parameters()
            continue
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    return model


def init_model(spec, meta, seed: int) -> nn.Module:
    """A run's model at epoch 0 (``spec`` a TrainSpec, ``meta`` the dataset's DatasetMeta): built
    and initialized on the CPU from ``seed``, so that every device gets the same weights."""
    torch.manual_seed(seed)
    h, _, c = meta.shape
    return initialize(build_model(spec.model, c, meta.num_classes, h), spec.init, spec.init_std)


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """(name, module) of every conv layer in forward order: layer l of the statistics is item l-1."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def sequential_layers(model: nn.Module) -> list[nn.Module]:
    """The model as a flat list of modules whose composition is its forward pass."""
    return [*model.features, model.avgpool, nn.Flatten(1), *model.classifier]


def kaiming_std(conv: nn.Conv2d) -> float:
    """The std of Kaiming-normal (fan_out, ReLU) for ``conv``."""
    fan_out = conv.out_channels * math.prod(conv.kernel_size)
    return math.sqrt(2.0 / fan_out)
