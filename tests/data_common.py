"""What the dataset tests share (test_data, test_loaders, test_variants): the tiny IDX dataset's
spec and its conversion."""

import pytest

from convbias.data.convert import convert
from convbias.specs import DatasetSpec

SPEC = {"source": "mnist", "pad": 2, "val_fraction": 0.1, "split_seed": 0, "hflip": False,
        "pixel_range": "standardize"}


@pytest.fixture(scope="module")
def converted(idx_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("beton")
    meta = convert("tiny", DatasetSpec.from_config({**SPEC, "path": str(idx_dataset)}),
                   out / "train.beton", out / "test.beton",
                   out / "meta.json")
    return out, meta
