"""Devices without a GPU: the CUDA calls a GPU job makes, its precision, and the local GPU allocator."""

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from convbias.specs import ModelSpec, TrainSpec
from convbias.devices import claim_gpus, gpu_pool, job_gpus, precision, resolve_device, set_precision, use_device

# Bounds on every wait for another process or a lock, so that a deadlock fails a test with a message
# instead of hanging it (never a measure of speed): a child's line (its start imports torch, on a
# loaded machine), and a claim of a GPU that is free
LINE_WITHIN = 30
CLAIM_WITHIN = 10


def line_within(stream, what: str, seconds: float = LINE_WITHIN) -> str:
    """The next line of a child's pipe ``stream``, read in a thread: a child that never writes it
    fails the test after ``seconds``, saying ``what`` was awaited."""
    import threading

    got = []
    reader = threading.Thread(target=lambda: got.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(seconds)
    assert got, f"no line from the child process in {seconds} s: {what}"
    return got[0]


def claimed_within(n: int, pool: list[str], folder, what: str, seconds: float = CLAIM_WITHIN) -> list[str]:
    """The GPUs claim_gpus(n, pool, folder) gets (given back at once), claimed in a thread: a claim
    still waiting after ``seconds`` fails the test, saying ``what`` was expected."""
    import threading

    got = []

    def claim():
        with claim_gpus(n, pool, folder, poll=0.05) as gpus:
            got.append(gpus)

    threading.Thread(target=claim, daemon=True).start()
    deadline = time.monotonic() + seconds
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got, f"no {n} GPU(s) of {pool} claimed in {seconds} s: {what}"
    return got[0]


def ended_within(proc: subprocess.Popen, what: str, line: str | None = None, seconds: float = LINE_WITHIN) -> str:
    """What child ``proc`` wrote to its stdout until it ended, given ``line`` on its stdin: a child
    still running after ``seconds`` fails the test, saying ``what`` was expected."""
    try:
        return proc.communicate(line, timeout=seconds)[0]
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child process still runs after {seconds} s: {what}")


@pytest.fixture
def children():
    """A list to put child processes in: each is killed (if still running) after the test, so that a
    failed test leaves none behind holding GPU locks or waiting on a pipe."""
    started = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError, ValueError):
                    pipe.close()


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda as on a one-GPU machine, up to the point where a kernel would run."""
    calls = []
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)  # restored after
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch._C, "_cuda_setDevice", lambda index: calls.append(index), raising=False)
    return calls


@pytest.mark.parametrize("name", ["auto", "cuda"])
def test_a_single_gpu_job_sets_an_indexed_device(fake_cuda, name):
    device = resolve_device(name)
    assert device == torch.device("cuda", 0)
    use_device(device)  # what train_run does first; a device without index made torch raise here
    assert fake_cuda == [0]
    with pytest.raises(ValueError):  # the call as it was made before
        torch.cuda.set_device(torch.device("cuda"))


def test_explicit_index_is_kept(fake_cuda):
    assert resolve_device("cuda:3") == torch.device("cuda", 3)
    assert resolve_device("cpu") == torch.device("cpu")


def _modes():
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def test_precision_decides_tf32_for_convolutions_and_matmuls():
    before = _modes()
    with precision("fp32"):
        assert _modes() == (False, False)
    with precision("tf32"):
        assert _modes() == (True, True)
    with precision("bf16"):  # autocast does the bf16 part; what stays float32 is IEEE
        assert _modes() == (False, False)
    assert _modes() == before
    with pytest.raises(ValueError, match="precision"):
        set_precision("fp16")


def test_precision_is_part_of_a_runs_identity():
    base = TrainSpec(model=ModelSpec("lenet"), epochs=1)
    prints = {p: TrainSpec(**{**base.__dict__, "precision": p}).fingerprint(seed=0) for p in ("fp32", "tf32", "bf16")}
    assert len(set(prints.values())) == 3


def test_gpu_pool_follows_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5,GPU-abc")
    assert gpu_pool() == ["2", "5", "GPU-abc"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_pool() == []


def test_claims_never_share_a_gpu_and_wait_for_a_free_one(tmp_path, children):
    pool = ["0", "1", "2"]
    with claim_gpus(2, pool, tmp_path) as first:
        assert first == ["0", "1"]
        with claim_gpus(1, pool, tmp_path) as second:
            assert second == ["2"]
            waited = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
                from pathlib import Path
                from convbias.devices import claim_gpus
                with claim_gpus(1, {pool!r}, Path({str(tmp_path)!r}), poll=0.05) as got:
                    print(got[0], flush=True)
                """)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            children.append(waited)
            said = line_within(waited.stderr, "a claim of 1 GPU of 3 held says it waits")
            assert "waiting for 1 free GPU" in said  # all three are held: it waits
            time.sleep(0.3)
            assert waited.poll() is None
        out = ended_within(waited, "the waiting claim gets GPU 2 once it is given back")
        assert out.strip() == "2"
    with pytest.raises(RuntimeError, match="needs 4 GPUs"):
        with claim_gpus(4, pool, tmp_path):
            pass


def test_a_claim_that_waits_holds_no_gpu_meanwhile_and_two_racing_claims_both_get_through(tmp_path, children):
    """Pool of 3, GPU 0 held here: a job that needs 2 takes 1 and 2 and runs; a second job that needs 2
    waits — holding nothing (GPU 0, given back here, can be taken by anyone) — and gets 2 GPUs once
    the first is done. A waiting claim that kept what it took would block the others and itself:
    every wait here is bounded, so that fails the test in seconds instead of hanging it."""
    pool = ["0", "1", "2"]

    def job():  # holds its GPUs until a line arrives on its stdin (no timing: a loaded machine starts it late)
        children.append(subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from pathlib import Path
            from convbias.devices import claim_gpus
            with claim_gpus(2, {pool!r}, Path({str(tmp_path)!r}), poll=0.05) as got:
                print(",".join(got), flush=True)
                sys.stdin.readline()
            """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        return children[-1]

    with claim_gpus(1, pool, tmp_path) as mine:
        assert mine == ["0"]
        first = job()
        assert line_within(first.stdout, "the first job's 2 GPUs of 3, 1 held here").strip() == "1,2"
        second = job()
        assert "waiting for 2 free GPU" in line_within(second.stderr, "the second job says it waits for 2 GPUs")
    time.sleep(0.5)  # the waiting job tries again every 0.05 s: it takes GPU 0 each time, and must give it back
    again = claimed_within(1, ["0"], tmp_path, "GPU 0 is free, unless the waiting job kept it when it took it")
    assert again == ["0"] and first.poll() is None and second.poll() is None  # while both still run
    ended_within(first, "the first job ends once given its line", "\n")  # the second gets two GPUs
    out = ended_within(second, "the waiting job gets 2 GPUs once the first gave its back, and ends", "\n")
    assert out.strip() in {"0,1", "0,2", "1,2"} and first.returncode == 0 and second.returncode == 0


def test_shared_claims_spread_over_the_gpus_k_per_gpu_and_never_beside_a_whole_claim(tmp_path):
    """runs_per_gpu 2 on two GPUs: four one-GPU jobs take GPU 0, 1, 0, 1 (spread before doubling
    up); a fifth waits until one ends, then takes its place.  A job holding a GPU whole (runs_per_gpu
    1, or data-parallel) keeps shared jobs off it, and waits while any shares the GPU it wants."""
    import threading

    pool = ["0", "1"]

    def claim_in_thread(**kwargs):
        got, release = [], threading.Event()

        def hold():
            with claim_gpus(1, pool, tmp_path, poll=0.02, **kwargs) as gpus:
                got.extend(gpus)
                release.wait(30)
        thread = threading.Thread(target=hold)
        thread.start()
        return got, release, thread

    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(claim_gpus(1, pool, tmp_path, shares=2)) for _ in range(4)]
        assert held == [["0"], ["1"], ["0"], ["1"]]
        got, release, thread = claim_in_thread(shares=2)
        whole, release_whole, whole_thread = claim_in_thread()
        time.sleep(0.3)
        assert got == [] and whole == []  # both places of both GPUs taken: they wait
        stack.close()  # the four jobs end
        thread.join(0.01)
        deadline = time.time() + 30
        while (not got or not whole) and time.time() < deadline:
            time.sleep(0.02)
        assert {got[0], whole[0]} == {"0", "1"}  # each its own GPU: the whole one is not shared
        release.set()
        release_whole.set()
        thread.join(30)
        whole_thread.join(30)
    with claim_gpus(1, pool, tmp_path) as mine:  # GPU 0 whole: shared jobs go to GPU 1 only
        assert mine == ["0"]
        with claim_gpus(1, pool, tmp_path, shares=2) as a, claim_gpus(1, pool, tmp_path, shares=2) as b:
            assert a == b == ["1"]
    with pytest.raises(ValueError, match="only one-GPU jobs share a GPU"):
        with claim_gpus(2, pool, tmp_path, shares=2):
            pass


def test_a_killed_jobs_gpu_is_free_again(tmp_path, children):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pathlib import Path
        from convbias.devices import claim_gpus
        with claim_gpus(1, ["0"], Path({str(tmp_path)!r})):
            print("held", flush=True)
            time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True)
    children.append(holder)
    assert line_within(holder.stdout, "the holder says it holds GPU 0").strip() == "held"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=LINE_WITHIN)
    assert claimed_within(1, ["0"], tmp_path, "a killed job's lock goes with its process") == ["0"]


def test_job_gpus_hides_gpus_from_cpu_jobs_and_gives_gpu_jobs_their_own(monkeypatch, tmp_path):
    monkeypatch.setenv("CONVBIAS_GPU_LOCKS", str(tmp_path))
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    with job_gpus("cpu"):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"
    with job_gpus("auto") as mine:
        assert mine == ["3"] and os.environ["CUDA_VISIBLE_DEVICES"] == "3"
        other = subprocess.run([sys.executable, "-c", textwrap.dedent("""
            import os
            from convbias.devices import job_gpus
            with job_gpus("cuda"):
                print(os.environ["CUDA_VISIBLE_DEVICES"])
            """)], capture_output=True, text=True, timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": "3,5"})
        assert other.stdout.strip() == "5"  # another job started beside it gets the other GPU
    with job_gpus("auto", 2) as both:
        assert both == ["3", "5"] and os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with job_gpus("auto") as none:  # a machine without GPUs: auto computes on the CPU
        assert none == [] and os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_under_slurm_the_scheduler_decides(monkeypatch, tmp_path):
    monkeypatch.setenv("CONVBIAS_GPU_LOCKS", str(tmp_path))
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with job_gpus("auto", 1):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert not list(tmp_path.iterdir())  # no lock taken


def test_a_jobs_memory_is_its_mem_mb_at_most_the_machines():
    from convbias.devices import job_memory

    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert job_memory(None) == physical == job_memory(0)
    assert job_memory(1000) == 1000 * 2**20
    assert job_memory(10**12) == physical
