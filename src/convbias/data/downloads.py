"""The published files of the downloadable sources and where a dataset's files are read from.

Downloads happen in the local rules ``download_<source>`` (workflow/rules/data.smk), on the
machine that runs Snakemake — a cluster's login node — so that compute jobs never touch the
network.  A dataset is read from its config ``path`` when its files are there; otherwise, when
``download`` is on and the source is published, from :func:`download_folder` (``resources/<source>``),
where those rules put them.  Where the files come from and their MD5 checksums are torchvision's;
a config's ``mirrors`` entry replaces them (a local mirror, or the tests' HTTP server).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .sources import DatasetError


@dataclass(frozen=True)
class Published:
    """Where a source's files are published: base URLs tried in order, and each file's MD5."""

    urls: tuple[str, ...]
    md5: dict[str, str]


def _torchvision(source: str) -> Published:
    from torchvision import datasets

    if source in ("cifar10", "cifar100"):
        cls = datasets.CIFAR10 if source == "cifar10" else datasets.CIFAR100
        return Published((cls.url.rsplit("/", 1)[0] + "/",), {cls.filename: cls.tgz_md5})
    cls = datasets.MNIST if source == "mnist" else datasets.FashionMNIST
    return Published(tuple(cls.mirrors), dict(cls.resources))


# The file names each downloadable source publishes (the readers in convbias.data.sources take
# them as they are: IDX .gz files, the CIFAR python .tar.gz).
_IDX = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz")
FILES = {"cifar10": ("cifar-10-python.tar.gz",), "cifar100": ("cifar-100-python.tar.gz",),
         "mnist": _IDX, "fashion_mnist": _IDX}
DOWNLOADABLE = tuple(sorted(FILES))
# A CIFAR archive already extracted counts as present.
_EXTRACTED = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


def _extracted(source: str, folder: Path) -> bool:
    return source in _EXTRACTED and (folder / _EXTRACTED[source]).is_dir()


def published(source: str, mirror: dict | None = None) -> Published:
    """Where ``source``'s files are fetched from: torchvision's URLs and checksums, or ``mirror``
    (a config ``mirrors`` entry: ``url``, the base URL of the files, and optionally ``md5``)."""
    if source not in DOWNLOADABLE:
        raise DatasetError(f"source {source!r} is not published for download; put its files where the "
                           f"config's path says")
    known = _torchvision(source)
    if not mirror:
        return known
    return Published((mirror["url"].rstrip("/") + "/",), {**known.md5, **mirror.get("md5", {})})


def download_folder(source: str) -> str:
    """Where rule ``download_<source>`` puts the files (relative to the working directory)."""
    return f"resources/{source}"


def download_files(source: str) -> list[str]:
    """The files rule ``download_<source>`` writes."""
    return [f"{download_folder(source)}/{name}" for name in FILES[source]]


def present(source: str, folder: str | Path | None) -> bool:
    """Whether ``folder`` holds ``source``'s files (plain or .gz IDX; a CIFAR archive or its extraction)."""
    if folder is None:
        return False
    folder = Path(folder)
    return _extracted(source, folder) or all((folder / name).exists() or (folder / name.removesuffix(".gz")).exists() for name in FILES[source])


def needs_download(spec) -> bool:
    """Whether a dataset (a :class:`~convbias.specs.DatasetSpec`) is read from its source's download:
    ``download`` is on, the source is published, and its ``path`` lacks the files — or is the download
    folder itself, whose files are rule ``download_<source>``'s (unless the archive is extracted
    there), so that the answer stays the same once they are downloaded."""
    if not (spec.download and spec.source in DOWNLOADABLE):
        return False
    if Path(spec.path).resolve() == Path(download_folder(spec.source)).resolve():
        return not _extracted(spec.source, Path(spec.path))
    return not present(spec.source, spec.path)


def folder_to_read(spec) -> str | None:
    """The folder a dataset's files are read from: its ``path``, or its source's download folder."""
    return download_folder(spec.source) if needs_download(spec) else spec.path


def fetch(source: str, folder: str | Path, mirror: dict | None = None) -> list[Path]:  # pragma: no mutate block (network)
    """Download ``source``'s files into ``folder``, each checked against its MD5 before it gets its
    name (a killed or failed download leaves nothing behind); files already there and intact are kept."""
    from torchvision.datasets.utils import check_integrity, download_url

    where = published(source, mirror)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    done = []
    for name in FILES[source]:
        target, md5 = folder / name, where.md5[name]
        if check_integrity(str(target), md5):
            done.append(target)
            continue
        part = folder / f".{name}.part"
        failures = []
        for base in where.urls:
            try:
                download_url(base + name, str(folder), filename=part.name, md5=md5)
            except RuntimeError:  # torchvision's "File not found or corrupted."
                failures.append(f"{base}{name} does not match its MD5 checksum {md5}")
            except Exception as err:  # URLError, HTTPError, OSError: the reason is in the message
                failures.append(f"{base}{name}: {type(err).__name__}: {getattr(err, 'reason', err)}")
            else:
                os.replace(part, target)
                done.append(target)
                break
            finally:
                part.unlink(missing_ok=True)
        else:
            missing = [n for n in FILES[source] if not (folder / n).exists()]
            raise DatasetError(f"could not download {name} ({'; '.join(failures)}); without network, put "
                               f"{', '.join(missing)} (MD5 {md5}{', …' if len(missing) > 1 else ''}) into "
                               f"{folder}/ by hand, or point the dataset's path to a folder that has them")
    return done
