"""Weights on disk: safetensors round trips, atomic writes, and which torch files load."""

import pytest
import torch
from safetensors.torch import load_file

from convbias.checkpoints import WeightsError, atomic_write, load_weights, read_metadata, save_weights


def test_save_writes_every_tensor_and_json_metadata(tmp_path):
    state = {"a.weight": torch.randn(4, 3, 3, 3).transpose(2, 3), "a.bias": torch.arange(4.0)}
    save_weights(tmp_path / "sub" / "w.safetensors", state, epoch=3, conv_layers=["a"], note={"k": [1, 2]})
    stored = load_file(tmp_path / "sub" / "w.safetensors")  # read back with safetensors itself
    assert stored.keys() == state.keys() and all(torch.equal(stored[k], state[k]) for k in state)
    assert read_metadata(tmp_path / "sub" / "w.safetensors") == {"epoch": 3, "conv_layers": ["a"], "note": {"k": [1, 2]}}
    assert all(torch.equal(load_weights(tmp_path / "sub" / "w.safetensors")[k], state[k]) for k in state)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["w.safetensors"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"old")

    def fail(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, fail)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["w.bin"]
    atomic_write(path, lambda tmp: tmp.write_bytes(b"new"))
    assert path.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["w.bin"]
    atomic_write(tmp_path / "a" / "b" / "w.bin", lambda tmp: tmp.write_bytes(b"deep"))  # folders are made
    assert (tmp_path / "a" / "b" / "w.bin").read_bytes() == b"deep"


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model", "model_state_dict"])
def test_torch_files_load_with_or_without_a_wrapping_dict(tmp_path, wrapper):
    state = {"features.0.weight": torch.randn(2, 1, 3, 3), "features.0.bias": torch.randn(2)}
    torch.save(state if wrapper is None else {wrapper: state, "epoch": 7}, tmp_path / "w.pt")
    loaded = load_weights(tmp_path / "w.pt")
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


@pytest.mark.parametrize("content,message", [(None, "does not exist"), ({"w": torch.zeros(1), "n": 3}, "no state dict"),
                                             ([torch.zeros(1)], "no state dict")])
def test_files_that_are_not_state_dicts_are_refused(tmp_path, content, message):
    if content is not None:
        torch.save(content, tmp_path / "w.pt")
    with pytest.raises(WeightsError, match=message):
        load_weights(tmp_path / "w.pt")


def test_named_tensors_are_read_alone_from_either_format(tmp_path, monkeypatch):
    """``keys`` gives exactly those tensors; from safetensors nothing else is read (spied on
    ``get_tensor``); a missing one is named."""
    import safetensors

    state = {"a.weight": torch.randn(4, 3, 3, 3), "a.bias": torch.randn(4), "fc.weight": torch.randn(10, 36)}
    save_weights(tmp_path / "w.safetensors", state)
    torch.save(state, tmp_path / "w.pt")
    read = []
    original = safetensors.safe_open

    class Spy:
        def __init__(self, *args, **kwargs):
            self.inner = original(*args, **kwargs)

        def __enter__(self):
            self.handle = self.inner.__enter__()
            return self

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

        def keys(self):
            return self.handle.keys()

        def get_tensor(self, name):
            read.append(name)
            return self.handle.get_tensor(name)

    import convbias.checkpoints as checkpoints
    monkeypatch.setattr(checkpoints, "safe_open", Spy)
    for name in ("w.safetensors", "w.pt"):
        got = load_weights(tmp_path / name, ["a.bias", "a.weight"])
        assert list(got) == ["a.bias", "a.weight"] and all(torch.equal(got[k], state[k]) for k in got)
        with pytest.raises(WeightsError, match="no tensor 'b.weight'"):
            load_weights(tmp_path / name, ["a.weight", "b.weight"])
    assert read == ["a.bias", "a.weight"]  # the classifier was never read
    assert list(load_weights(tmp_path / "w.safetensors")) == sorted(state)


def test_a_files_checksum_is_the_sha256_of_all_its_bytes(tmp_path):
    """file_sha256 reads in 1 MiB blocks: a file of a few blocks and a part, and an empty one."""
    import hashlib

    from convbias.checkpoints import file_sha256, write_bytes

    data = bytes(range(256)) * (3 * 4096 + 17)  # 3 MiB and 4,352 bytes
    path = tmp_path / "blob"
    assert write_bytes(path, data) == hashlib.sha256(data).hexdigest() == file_sha256(path)
    (tmp_path / "empty").write_bytes(b"")
    assert file_sha256(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def test_tensors_read_from_bytes_in_memory_are_the_files_and_errors_name_the_file(tmp_path):
    from convbias.checkpoints import weights_bytes, weights_from_bytes

    state = {"a.weight": torch.randn(3, 2), "b.bias": torch.arange(4.0)}
    data = weights_bytes(state, epoch=1)
    every = weights_from_bytes(data)
    assert every.keys() == state.keys() and all(torch.equal(every[k], state[k]) for k in state)
    assert list(weights_from_bytes(data, ["b.bias"])) == ["b.bias"]
    with pytest.raises(WeightsError, match=r"run/epoch001\.safetensors has no tensor 'c' \(1 missing\)"):
        weights_from_bytes(data, ["b.bias", "c"], "run/epoch001.safetensors")
    with pytest.raises(WeightsError, match=r"run/epoch001\.safetensors is not a readable safetensors file"):
        weights_from_bytes(data[:40], None, "run/epoch001.safetensors")
    with pytest.raises(WeightsError, match=r"^<bytes> is not a readable safetensors file"):  # no file named
        weights_from_bytes(data[:40])


def test_the_same_tensors_and_metadata_give_the_same_bytes_in_every_process(tmp_path):
    """Files are byte-identical for identical content: a rewrite of the same state matches the
    checksum its commit recorded (safetensors alone writes metadata keys in a per-process order)."""
    import subprocess
    import sys

    code = ("import hashlib, sys, torch; from convbias.checkpoints import weights_bytes; "
            "print(hashlib.sha256(weights_bytes({'b': torch.arange(6.).reshape(2, 3), 'a': torch.ones(2)}, "
            "epoch=3, seed=1, contents='full', conv_layers=['features.0', 'features.3'])).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
               for _ in range(3)}
    assert len(digests) == 1, digests
    path = tmp_path / "w.safetensors"
    save_weights(path, {"a": torch.ones(2)}, epoch=3, conv_layers=["x"])
    assert read_metadata(path) == {"epoch": 3, "conv_layers": ["x"]}
