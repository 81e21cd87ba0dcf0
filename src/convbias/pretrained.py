"""Networks trained elsewhere: any weights file, or torchvision's pretrained ImageNet weights read
from TORCH_HOME — never a silent download.

``torchvision_weights("vgg16")`` returns the state dict of torchvision's default ImageNet weights
of that model if the file is already in ``$TORCH_HOME/hub/checkpoints/`` (where torchvision
itself caches it); otherwise it fails with one sentence naming the file, the folder and the
URL, unless the download is explicitly allowed.  Files are read with ``weights_only=True``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .checkpoints import WeightsError, load_weights


def weights_file(name: str) -> tuple[Path, str]:
    """(local path, URL) of torchvision's default ImageNet weights of model ``name``."""
    from torchvision import models

    try:
        weights = models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError):
        known = ", ".join(sorted(models.list_models(module=models)))
        raise WeightsError(f"torchvision has no model {name!r} with pretrained weights (known: {known})") from None
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    return folder / os.path.basename(weights.url), weights.url


def torchvision_weights(name: str, allow_download: bool = False) -> dict[str, torch.Tensor]:
    """The state dict of torchvision model ``name``'s ImageNet weights (see the module docstring)."""
    path, url = weights_file(name)
    if not path.is_file():
        if not allow_download:
            raise WeightsError(f"the weights of torchvision:{name} are not in {path.parent}: put {path.name} "
                               f"(from {url}) there, set TORCH_HOME to the folder that holds hub/checkpoints/, "
                               f"or let convbias download it (convbias stats --download; in the workflow: "
                               f"pretrained.<name>.download: true)")
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), progress=True)
    return load_weights(path)


def conv_order(name: str) -> list[str]:
    """The names of model ``name``'s conv layers in definition (forward) order, from an unweighted model."""
    from torchvision import models

    model = models.get_model(name, weights=None)
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]


def read_filters(path: str, include_1x1: bool = False, allow_download: bool = False):
    """(state dict, per-filter cosine table) of a weights file or ``torchvision:NAME``."""
    from .checkpoints import read_metadata
    from .stats import checkpoint_filters

    if path.startswith("torchvision:"):
        name = path.split(":", 1)[1]
        state, order = torchvision_weights(name, allow_download), conv_order(name)
    else:
        state = load_weights(path)
        try:
            order = read_metadata(path).get("conv_layers")
        except Exception:  # not a safetensors file: no stored layer order, natural name order instead
            order = None
    # wrappers' prefixes: DataParallel/DDP (module.), torch.compile (_orig_mod.)
    for prefix in ("module.", "_orig_mod."):
        state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state, checkpoint_filters(state, order, include_1x1=include_1x1)
