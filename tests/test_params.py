"""How a rule hands its job a typed spec: Snakemake records the spec's identity, the job gets the spec."""

import pickle

import pytest
from snakemake.persistence import PersistenceBase

from convbias.config import load_config
from convbias.params import SpecDict, SpecStr, spec_param
from convbias.specs import DatasetSpec, DownloadSpec, RunJob

CONFIG = {"datasets": {"d": {"source": "mnist", "path": "/data/mnist", "os_cache": False}},
          "experiments": {"e": {"dataset": "d", "model": {"arch": "lenet"}, "epochs": 3, "seeds": [0],
                                "resume_every": 600, "device": "cpu"}},
          "figures": {"f": {"kind": "measure", "study": "quickstart", "experiments": ["e"], "caption": "c"}},
          "runs_per_gpu": 2, "mirrors": {"mnist": {"url": "http://mirror.example/mnist/"}}}


def recorded(value):
    """What Snakemake's metadata records of a parameter to decide later whether it changed."""
    return PersistenceBase._serialize_param_builtin(None, value)  # Snakemake's own (its repr, of builtin types only)


def test_a_jobs_spec_parameter_is_recorded_as_its_identity_and_carries_the_typed_spec():
    study = load_config({**CONFIG})
    job = RunJob(study.experiments["e"], study.datasets["d"], study.runs_per_gpu)
    param = spec_param(job)
    assert isinstance(param, SpecDict) and param == study.experiments["e"].train.to_dict()
    assert recorded(param) == repr(study.experiments["e"].train.to_dict())  # what defines the run, nothing else
    back = pickle.loads(pickle.dumps(param, protocol=4))  # as Snakemake hands it to the job's script
    assert back.typed == job and back.typed.runs_per_gpu == 2 and back.typed.experiment.resume_every == 600
    assert back.typed.dataset.os_cache is False and back.typed.processes == 1
    assert "resume_every" not in recorded(param) and "/data/mnist" not in recorded(param)


def test_a_dataset_is_recorded_without_its_path_and_a_download_as_its_source():
    study = load_config({**CONFIG})
    data = spec_param(study.datasets["d"])
    assert data == study.datasets["d"].identity() and "path" not in data and data.typed.path == "/data/mnist"
    moved = DatasetSpec(**{**study.datasets["d"].__dict__, "path": "/elsewhere", "download": False})
    assert recorded(spec_param(moved)) == recorded(data)
    download = spec_param(DownloadSpec("mnist", study.mirrors["mnist"]))
    assert isinstance(download, SpecStr) and download == "mnist" and recorded(download) == repr("mnist")
    back = pickle.loads(pickle.dumps(download, protocol=4))
    assert back == "mnist" and back.typed.mirror == {"url": "http://mirror.example/mnist/"}


@pytest.mark.parametrize("kind", ["figures", "pretrained"])
def test_a_spec_whose_every_key_defines_its_job_is_recorded_whole(kind):
    config = {**CONFIG, "pretrained": {"p": {"weights": "torchvision:vgg16", "arch": "vgg16"}}}
    study = load_config(config)
    spec = next(iter(getattr(study, kind).values()))
    assert spec_param(spec) == spec.to_dict() and spec_param(spec).typed is spec
    assert recorded(spec_param(spec)) == repr(spec.to_dict())


def test_a_parameter_of_many_paths_is_shown_short_and_recorded_whole():
    from convbias.params import ShownAs

    files = {"e": {"runs": {0: "results/runs/e/seed0"}, "reinit": [], "expect": "none"}}
    param = ShownAs(files, "e: 1 run")
    assert str(param) == "e: 1 run" and param == files and recorded(param) == repr(files)
    back = pickle.loads(pickle.dumps(param, protocol=4))
    assert back == files and str(back) == "e: 1 run"
