import gzip
import hashlib
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

# Waiting OpenMP threads sleep instead of spinning, in this process and every child it starts
# (Snakemake, its jobs, training children). `make test` runs four pytest processes on two cores,
# each with torch's threads: spinning threads burn the cores the others need. Four concurrent
# 2-thread trainings of a small conv net: 37 s spinning (GNU OpenMP's default), 9 s passive, 2.4 s
# one alone (`bench/omp_wait.py` measures it side by side). Set before anything imports torch
# (its OpenMP reads it once, when loaded).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) as a gzipped IDX file, the format of MNIST and Fashion-MNIST."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def learnable_images(labels: np.ndarray, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """Noisy images whose class is a bright horizontal band at a class-dependent height."""
    images = rng.integers(0, 60, size=(len(labels), size, size), dtype=np.uint8)
    band = size // 10
    for i, c in enumerate(labels):
        images[i, c * band : (c + 1) * band + 1, 4:-4] = 230
    return images


def make_idx_dataset(folder: Path, n_train: int = 800, n_test: int = 200, seed: int = 0) -> Path:
    """A tiny 10-class dataset in the four MNIST IDX .gz files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", learnable_images(labels, rng))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


class FileServer:
    """An HTTP server on 127.0.0.1 serving ``folder``, in a thread; ``requests`` lists the paths asked for."""

    def __init__(self, folder: Path):
        import functools
        import http.server
        import threading

        requests = self.requests = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean; record instead
                requests.append(self.path)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                      functools.partial(Handler, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def file_server():
    """serve(folder) → a running :class:`FileServer`; every one is stopped after the test."""
    servers = []

    def serve(folder: Path) -> FileServer:
        servers.append(FileServer(folder))
        return servers[-1]

    yield serve
    for server in servers:
        server.close()


@pytest.fixture(scope="session")
def idx_dataset(request, tmp_path_factory) -> Path:
    return built_once(request, tmp_path_factory, "idx", make_idx_dataset)


@pytest.fixture(scope="session")
def tiny_converted(idx_dataset, request, tmp_path_factory):
    """(meta, train file, test file) of the tiny IDX dataset converted as training tests use it."""
    from convbias.data.convert import convert
    from convbias.data.dataset import DatasetMeta
    from convbias.specs import DatasetSpec

    def build(out):
        spec = DatasetSpec.from_config({"source": "mnist", "path": str(idx_dataset), "pad": 0, "val_fraction": 0.1,
                                        "split_seed": 0, "hflip": True, "pixel_range": "minus_one_one"})
        convert("tiny", spec, out / "train.beton", out / "test.beton", out / "meta.json")

    out = built_once(request, tmp_path_factory, "train-data", build, uses=("convbias.data",))
    return DatasetMeta.load(out / "meta.json"), out / "train.beton", out / "test.beton"


def make_cifar_archive(folder: Path, num_classes: int = 10, n_per_batch: int = 6, seed: int = 0) -> dict:
    """A CIFAR-10/100 ``*-python.tar.gz`` with a few images per batch, in the published pickle format."""
    import io
    import pickle
    import tarfile

    rng = np.random.default_rng(seed)
    if num_classes == 10:
        archive, base = "cifar-10-python.tar.gz", "cifar-10-batches-py"
        names, key = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], b"labels"
    else:
        archive, base, names, key = "cifar-100-python.tar.gz", "cifar-100-python", ["train", "test"], b"fine_labels"
    batches = {}
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / archive, "w:gz") as tar:
        for name in names:
            batch = {b"batch_label": name.encode(), b"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                     key: rng.integers(0, num_classes, n_per_batch).tolist(),
                     b"filenames": [f"{i}.png".encode() for i in range(n_per_batch)]}
            blob = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"{base}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
            batches[name] = batch
    return batches


def make_image_folder(root: Path, classes: int = 2, per_class: dict | None = None, size: int = 64, seed: int = 0) -> Path:
    """An ILSVRC2012-style folder (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG) of smooth JPEGs written with PIL."""
    from PIL import Image

    per_class = per_class or {"train": 5, "val": 2}
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for split, n in per_class.items():
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a, b = rng.uniform(40, 200, size=2)
                image = np.stack([a * yy + 30, b * xx + 30, (a + b) / 2 * (yy + xx) / 2 + 30], axis=-1)
                Image.fromarray(image.astype(np.uint8)).save(folder / f"img_{i}.JPEG", quality=95)
    return root


# Mutation testing (`make mutation`): each module's mutants are run against that module's own
# fast test files only (mutmut further narrows them to the tests that reach the mutated function).
# A mutant that none of these tests reaches counts as "no tests", never as killed.
MUTATION_TESTS = {
    "convbias.stats": ("test_stats.py", "test_cli.py"),
    "convbias.checkpoints": ("test_checkpoints.py", "test_cli.py"),
    "convbias.reinit": ("test_reinit.py",),
    "convbias.models": ("test_models.py", "test_stats.py"),
    "convbias.figures": ("test_figures.py",),
    "convbias.claims": ("test_claims.py", "test_figures.py"),
    "convbias.verdicts": ("test_claims.py", "test_claims_simulation.py"),
    "convbias.data": ("test_data.py", "test_loaders.py", "test_variants.py", "test_downloads.py"),
    "convbias.train": ("test_train.py", "test_resume.py", "test_commits.py", "test_publishing.py", "test_manifests.py"),
    "convbias.runs": ("test_train.py", "test_resume.py", "test_commits.py", "test_publishing.py", "test_manifests.py",
                      "test_harness.py"),
}


def mutated_module() -> str | None:
    """The module (a key of MUTATION_TESTS) whose mutant this process tests; None outside mutation runs."""
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    return next((m for m in MUTATION_TESTS if mutant.startswith(m + ".")), None)


def built_once(request, tmp_path_factory, name: str, build, uses: tuple[str, ...] = ()) -> Path:
    """A folder of test data made by ``build(folder)``: in a fresh temporary folder, except in a
    mutation run whose mutated module is not in ``uses`` (the modules ``build`` calls), where it
    is made once and shared by the processes of every mutant (each mutant's tests run in a new
    process, and rebuilding a converted dataset would cost more than the tests themselves).

    The shared copy lives in the mutants folder, keyed by the text of the test files and of the
    modules ``build`` uses, so a change to either builds it again."""
    module = mutated_module()
    if module is None or module in uses:
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    root = request.config.rootpath
    key = hashlib.sha1()
    for path in sorted(root.glob("tests/*.py")) + [p for m in uses for p in sorted(_module_files(root, m))]:
        key.update(path.read_bytes())
    folder = root / ".fixtures" / f"{name}-{key.hexdigest()[:12]}"
    if not folder.exists():
        folder.parent.mkdir(exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{name}-"))
        build(tmp)
        try:
            tmp.rename(folder)
        except OSError:  # another mutant's process made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _module_files(root: Path, module: str) -> list[Path]:
    path = root / "src" / Path(*module.split("."))
    return list(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]


# The longest files first (make test hands whole files to four pytest processes: pytest-xdist's
# --dist loadfile, with --no-loadscope-reorder, else xdist orders files by their number of tests):
# the two Slurm files — mostly waiting on the cluster's status checks — start at once beside the two
# longest CPU-bound ones, and the rest are shared out as processes free up.
FIRST = ("test_slurm.py", "test_slurm_smoke.py", "test_train.py", "test_bench.py", "test_workflow.py",
         "test_reruns.py", "test_publishing.py", "test_commits.py", "test_resume.py", "test_workflow_config.py",
         "test_trainability.py")


def pytest_collection_modifyitems(config, items):
    module = mutated_module()
    if module is None:  # not a mutation run, or mutmut's own stats/clean runs
        rank = {name: i for i, name in enumerate(FIRST)}
        items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))  # stable: file order otherwise
        return
    keep = [item for item in items if item.path.name in MUTATION_TESTS[module]]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    # Fastest first (durations of mutmut's unmutated run): pytest stops at the first failure, so a
    # mutant a quick test kills never waits for the slow ones (halves the time of the models' mutants).
    stats = config.rootpath / "mutmut-stats.json"
    durations = json.loads(stats.read_text())["duration_by_test"] if stats.exists() else {}
    items[:] = sorted(keep, key=lambda item: durations.get(item.nodeid, 0.0))
