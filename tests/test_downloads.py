"""Downloads (convbias.data.downloads) against a local HTTP server serving files in the real formats."""

import socket
from pathlib import Path

import pytest

from conftest import make_cifar_archive, make_idx_dataset, md5
from convbias.data.downloads import (DOWNLOADABLE, FILES, download_files, download_folder, fetch, folder_to_read, needs_download,
                                     present, published)
from convbias.data.sources import DatasetError, idx_dataset
from convbias.schema import schema
from convbias.specs import DatasetSpec


def mirror_of(server, folder: Path, source: str = "mnist") -> dict:
    """A config ``mirrors`` entry for the files in ``folder``, with the checksums computed here."""
    return {"url": server.url, "md5": {name: md5(folder / name) for name in FILES[source]}}


def test_fetch_checks_every_file_and_keeps_the_intact_ones(tmp_path, file_server):
    served = make_idx_dataset(tmp_path / "served")
    server = file_server(served)
    target = tmp_path / "resources" / "mnist"
    paths = fetch("mnist", target, mirror_of(server, served))
    assert [p.name for p in paths] == list(FILES["mnist"])
    assert all(p.read_bytes() == (served / p.name).read_bytes() for p in paths)
    assert sorted(p.name for p in target.iterdir()) == sorted(FILES["mnist"])  # no temporary file left
    assert idx_dataset(target).train_images.shape == (800, 28, 28, 1)
    asked = len(server.requests)
    assert asked >= 4
    fetch("mnist", target, mirror_of(server, served))  # all there and intact: nothing fetched again
    assert len(server.requests) == asked


def test_a_corrupted_file_is_rejected_and_leaves_nothing(tmp_path, file_server):
    served = make_idx_dataset(tmp_path / "served")
    mirror = mirror_of(file_server(served), served)
    bad = served / "t10k-images-idx3-ubyte.gz"
    blob = bytearray(bad.read_bytes())
    blob[100] ^= 0xFF  # one byte differs from what the checksum says
    bad.write_bytes(bytes(blob))
    target = tmp_path / "resources" / "mnist"
    with pytest.raises(DatasetError) as err:
        fetch("mnist", target, mirror)
    message = str(err.value)
    assert f"t10k-images-idx3-ubyte.gz does not match its MD5 checksum {mirror['md5'][bad.name]}" in message
    assert f"put t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz (MD5 {mirror['md5'][bad.name]}, …) " \
           f"into {target}/ by hand" in message and "\n" not in message
    # the files before it were fetched and checked; the corrupted one and any partial file are gone
    assert sorted(p.name for p in target.iterdir()) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]


def test_without_network_it_says_where_to_put_the_file(tmp_path):
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DatasetError, match=r"could not download cifar-10-python.tar.gz \(http://127.0.0.1:\d+/"
                                           r"cifar-10-python.tar.gz: URLError: .*\); without network, put "
                                           r"cifar-10-python.tar.gz \(MD5 c58f30108f718f92721af3b95e74349a\) into"):
        fetch("cifar10", tmp_path / "cifar10", {"url": f"http://127.0.0.1:{port}"})
    assert not any((tmp_path / "cifar10").iterdir())


def test_the_published_locations_are_torchvisions_unless_a_mirror_says_otherwise():
    assert published("cifar10").urls == ("https://www.cs.toronto.edu/~kriz/",)
    assert published("cifar100").md5 == {"cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"}
    assert published("fashion_mnist").md5["train-images-idx3-ubyte.gz"] == "8d4fb7e6c68d591d4c3dfef9ec88bf0d"
    assert len(published("mnist").urls) == 2  # torchvision's mirrors, tried in order
    mirror = published("mnist", {"url": "http://mirror.example/mnist", "md5": {"t10k-labels-idx1-ubyte.gz": "0" * 32}})
    assert mirror.urls == ("http://mirror.example/mnist/",)
    assert published("mnist", {"url": "http://mirror.example/mnist/"}).urls == ("http://mirror.example/mnist/",)
    assert mirror.md5["t10k-labels-idx1-ubyte.gz"] == "0" * 32
    assert mirror.md5["train-images-idx3-ubyte.gz"] == published("mnist").md5["train-images-idx3-ubyte.gz"]
    with pytest.raises(DatasetError, match="'imagenet' is not published for download"):
        published("imagenet")
    # a config may name a mirror for exactly the sources that are published
    assert tuple(schema()["properties"]["mirrors"]["propertyNames"]["enum"]) == DOWNLOADABLE


def spec(source: str, path, download: bool = True) -> DatasetSpec:
    return DatasetSpec.from_config({"source": source, "path": str(path), "download": download})


def test_a_dataset_is_read_from_its_path_when_it_has_the_files_else_from_the_download(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    there = make_idx_dataset(tmp_path / "there")
    assert folder_to_read(spec("fashion_mnist", there)) == str(there) and not needs_download(spec("mnist", there))
    assert folder_to_read(spec("fashion_mnist", tmp_path / "absent")) == download_folder("fashion_mnist")
    assert folder_to_read(spec("mnist", tmp_path / "absent", download=False)) == str(tmp_path / "absent")
    # the download folder itself: its files are the download rule's, before and after they are there
    assert needs_download(spec("cifar10", "resources/cifar10"))
    make_cifar_archive(tmp_path / "resources" / "cifar10")
    assert needs_download(spec("cifar10", "resources/cifar10"))
    # … unless the archive was extracted there by hand
    (tmp_path / "resources" / "cifar100" / "cifar-100-python").mkdir(parents=True)
    assert not needs_download(spec("cifar100", "resources/cifar100"))
    assert not needs_download(spec("imagenet", tmp_path / "absent"))


def test_what_counts_as_a_sources_files(tmp_path):
    assert download_files("mnist") == [f"resources/mnist/{n}" for n in (
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")]
    assert download_files("cifar100") == ["resources/cifar100/cifar-100-python.tar.gz"]
    assert not present("mnist", None) and not present("mnist", tmp_path / "absent")
    plain = tmp_path / "plain"  # the IDX files unzipped, as some mirrors and packages ship them
    plain.mkdir()
    for name in FILES["mnist"]:
        (plain / name.removesuffix(".gz")).write_bytes(b"")
    assert present("fashion_mnist", plain)
    (plain / "t10k-labels-idx1-ubyte").unlink()
    assert not present("fashion_mnist", plain)
    (tmp_path / "cifar" / "cifar-10-batches-py").mkdir(parents=True)  # extracted by hand
    assert present("cifar10", tmp_path / "cifar") and not present("cifar100", tmp_path / "cifar")
