"""What every job shares (convbias.harness): the content cache that keeps a table whose inputs did
not change, a log that keeps every attempt, and a stop by SIGTERM that lets a commit in flight
finish."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from convbias.checkpoints import file_sha256
from convbias.harness import run_made_from, write_unless_kept
from convbias.runs.work import WorkFolder
from runs_common import reference  # noqa: F401 (fixtures)


def test_a_table_is_kept_when_only_file_times_changed_and_recomputed_when_its_inputs_or_code_did(reference, tmp_path,
                                                                                                   monkeypatch):
    """What filters and reinit jobs write: a table made from the same run (its manifest), parameters
    and code is kept — not rewritten, its file time now — and any change computes it again."""
    import convbias.harness

    out, calls = tmp_path / "tables" / "seed5.parquet", []

    def compute():
        calls.append(1)
        return pd.DataFrame({"epoch": [0, 1], "value": [0.5, float(len(calls))]})

    made = {"run": run_made_from(reference), "seed": 5}
    assert made["run"] == file_sha256(reference / "manifest.json") and run_made_from(tmp_path / "none") is None
    assert write_unless_kept(out, made, compute) is not None and len(calls) == 1
    written = out.read_bytes()
    os.utime(out, (1, 1))  # a copy with new times, or a touch, in the past here
    inode = out.stat().st_ino
    assert write_unless_kept(out, dict(reversed(list(made.items()))), compute) is None  # the same inputs
    assert len(calls) == 1 and out.read_bytes() == written and out.stat().st_ino == inode
    assert out.stat().st_mtime > time.time() - 60  # up to date for Snakemake from now on
    for changed in ({**made, "seed": 6}, {**made, "run": "another manifest"}, {**made, "epochs": 3}):
        count = len(calls)
        write_unless_kept(out, changed, compute)
        assert len(calls) == count + 1 and pd.read_parquet(out)["value"].iloc[-1] == len(calls)
        write_unless_kept(out, made, compute)  # back to the first inputs: computed again too
    count = len(calls)
    monkeypatch.setattr(convbias.harness, "code_digest", lambda: "other code")
    write_unless_kept(out, made, compute)
    assert len(calls) == count + 1
    write_unless_kept(out, {**made, "run": None}, compute)  # a run without a manifest: never kept
    write_unless_kept(out, {**made, "run": None}, compute)
    assert len(calls) == count + 3
    for other in (lambda: compute().to_parquet(out, index=False), lambda: out.write_bytes(b"not parquet")):
        other()  # a table of unknown inputs, an unreadable file: computed
        count = len(calls)
        write_unless_kept(out, made, compute)
        assert len(calls) == count + 1
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temporary file left


def stopped_once_logged(command: list[str], log: Path, text: str) -> int:
    """Start ``command``, send it SIGTERM once ``log`` shows ``text`` (as Slurm stops a job); its exit status."""
    proc = subprocess.Popen(command)
    deadline = time.time() + 60
    while time.time() < deadline and text not in (log.read_text() if log.exists() else ""):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    return proc.wait(30)


@pytest.mark.subprocess
def test_a_jobs_log_keeps_earlier_attempts_and_says_when_sigterm_stopped_it(tmp_path):
    """Snakemake deletes a rule's log before each rerun: a training job's log is a link to a hidden
    file beside it (one file system), so every attempt's lines stay — also after a later attempt
    that found nothing to train. An attempt stopped by SIGTERM (Slurm's time limit) says so in the
    log and still ends by that signal."""
    from convbias.harness import attempts_file

    log = tmp_path / "logs" / "seed0.log"
    child = ("import sys, time\nfrom convbias.harness import log_to\n"
             f"log_to([{str(log)!r}], keep_attempts=True)\nprint('attempt', sys.argv[1], flush=True)\n"
             "if sys.argv[1] == '2':\n    time.sleep(60)\n")
    assert subprocess.run([sys.executable, "-c", child, "1"], timeout=60).returncode == 0
    log.unlink()  # as Snakemake does before the job runs again
    assert stopped_once_logged([sys.executable, "-c", child, "2"], log, "attempt 2") == -signal.SIGTERM
    lines = log.read_text().splitlines()
    assert lines[:2] == ["attempt 1", "attempt 2"] and lines[2].startswith("stopped by SIGTERM"), lines
    log.unlink()
    assert subprocess.run([sys.executable, "-c", child, "3"], timeout=60).returncode == 0  # e.g. nothing to train
    assert log.read_text().splitlines() == lines + ["attempt 3"]
    assert attempts_file(log).parent == log.parent and attempts_file(log).samefile(log)


@pytest.mark.subprocess
@pytest.mark.parametrize("in_flight", [True, False])
def test_sigterm_lets_the_epoch_commit_in_flight_finish_first(tmp_path, in_flight):
    """Commits are written in the background (convbias.runs.commits.BackgroundCommits): a job stopped by
    SIGTERM while one is in flight (here a commit slowed to 2 s) waits for it, says so, then ends by
    that signal; the folder holds that epoch, committed.  With none in flight (the commit long
    done) it says nothing about commits."""
    log, work = tmp_path / "job.log", tmp_path / "resume" / "exp" / "seed0"
    child = f"""
import time, torch
from convbias.harness import log_to
from convbias.runs.commits import BackgroundCommits
from convbias.runs.work import WorkFolder
log_to([{str(log)!r}])
commit_state = WorkFolder.commit_state
def slow(self, *args, **kwargs):
    time.sleep(2 if {in_flight} else 0)
    return commit_state(self, *args, **kwargs)
WorkFolder.commit_state = slow
model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
with BackgroundCommits() as commits:
    commits.submit(WorkFolder({str(work)!r}, "fingerprint"), 0, model, optimizer, [], {{"seed": 0, "conv_layers": ["0"]}}, "full")
    while not {in_flight} and not WorkFolder({str(work)!r}, "fingerprint").progress_file.exists():
        time.sleep(0.01)
    time.sleep(0 if {in_flight} else 0.2)
    print("submitted", flush=True)
    time.sleep(60)
"""
    assert stopped_once_logged([sys.executable, "-c", child], log, "submitted") == -signal.SIGTERM
    lines = log.read_text().splitlines()
    said = ["the epochs being committed were committed first"] if in_flight else []
    assert lines[:1 + len(said)] == ["submitted", *said], lines
    assert len(lines) == 2 + len(said) and lines[-1].startswith("stopped by SIGTERM"), lines
    assert WorkFolder(work, "fingerprint").last_epoch(clear=False) == 0
