"""What an epoch's commit copies from training, and the thread that writes commits while the next
epoch trains (:class:`BackgroundCommits`).

What an epoch's file keeps is the run's snapshot policy: ``full`` — every tensor of the model;
``conv`` — the weight and bias of every conv layer (what the statistics and the
re-initialization sweep read), with the full state kept at epoch 0, at the final epoch and at
the resume point.  Each file says which in its metadata (``contents``).  How a commit is written
and read back: :class:`convbias.runs.work.WorkFolder`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures


def training_state(model, optimizer, layers: Iterable[str] | None = None, momentum: bool = True) -> tuple[dict, dict]:
    """Copies, in the host's memory, of ``model``'s tensors — only those of ``layers`` (module
    names) if given — and, if ``momentum``, of SGD's momentum buffers (by parameter name): what
    a commit writes, taken at once, so that training may go on (and change the tensors in place)
    while the copies are written."""
    import torch  # this module is also read by jobs that never train (the workflow's hooks, status)

    def copy(tensor):
        return tensor.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)

    kept = None if layers is None else set(layers)
    weights = {key: copy(value) for key, value in model.state_dict().items() if kept is None or layer_of(key) in kept}
    buffers = {name: copy(optimizer.state[p]["momentum_buffer"]) for name, p in model.named_parameters()
               if momentum and optimizer.state.get(p, {}).get("momentum_buffer") is not None}
    return weights, buffers


def layer_of(key: str) -> str:
    """The module a state-dict key belongs to (``features.0.weight`` → ``features.0``)."""
    return key.rsplit(".", 1)[0]


def commit_contents(snapshots: str, resume: bool) -> str:
    """What the file of an epoch committed under snapshot policy ``snapshots`` keeps: ``full``
    at a resume point and under the ``full`` policy, else ``conv``."""
    return "full" if resume or snapshots == "full" else "conv"


def commit_copies(model, optimizer, meta: dict, snapshots: str, resume: bool, momentum: bool = True) -> tuple[dict, dict]:
    """What a commit of ``model``'s current state writes (:meth:`WorkFolder.commit_state`'s
    ``weights`` and ``momentum``), copied by :func:`training_state`: at a resume point every
    tensor and, if ``momentum``, SGD's buffers; else the tensors of the epoch's snapshot."""
    layers = None if commit_contents(snapshots, resume) == "full" else meta["conv_layers"]
    return training_state(model, optimizer, layers, momentum=resume and momentum)


class BackgroundCommits:
    """Epoch commits written by one background thread while the next epochs train.

    :meth:`submit` copies what the commit writes to the host at once
    (:func:`commit_copies`) and leaves writing, hashing and committing it
    (:meth:`WorkFolder.commit_state`) to the thread, so a GPU does not wait for a
    VGG19's 1.1 GB of files.  Commits are made one at a time, in epoch order; at most two are in
    flight (the second waits in the thread's queue: an epoch's snapshot does not wait for the
    resume state written before it), at most one of them a resume state (a full state in memory
    is twice the model's).  A submit beyond that, the publication and the end of the ``with``
    block first wait and raise the error of a failed commit (a full disk).  A process killed
    meanwhile loses only those commits: the folder still resumes from its resume point, as after
    a kill in the middle of a commit; one stopped by SIGTERM (Slurm's time limit) first lets
    them finish (:meth:`finish_in_flight`, called by the job's handler)."""

    _open: set[BackgroundCommits] = set()  # of this process, for finish_in_flight
    IN_FLIGHT = 2

    def __init__(self):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")
        self._pending: list[tuple[Future, bool]] = []  # (commit, whether it writes a resume state), oldest first
        self._failed = False  # a commit failed: the ones queued behind it are not made

    @classmethod
    def finish_in_flight(cls, timeout: float) -> str | None:
        """Wait up to ``timeout`` seconds for the commits in flight in this process, if any; one line on how it ended."""
        pending = [future for c in list(cls._open) for future, _ in c._pending if not future.done()]
        if not pending:
            return None
        done, late = wait_for_futures(pending, timeout=timeout)
        if late:
            why = f"still writing after {timeout:g} s"
        elif any(f.exception() is not None for f in done):
            why = "a commit failed"
        else:
            return "the epochs being committed were committed first"
        return f"the epochs being committed were not all committed ({why}): the run resumes from its last resume point"

    def submit(self, work, epoch: int, model, optimizer, history: list[dict], meta: dict,
               snapshots: str, resume: bool = True, momentum: bool = True) -> None:
        """Commit epoch ``epoch`` into ``work`` (a :class:`~convbias.runs.work.WorkFolder`, which this
        module does not import: it imports this one): a resume point (``resume``: every tensor, and
        the momentum if ``momentum``), else the epoch's snapshot under policy ``snapshots``."""
        while len(self._pending) >= self.IN_FLIGHT or (resume and any(full for _, full in self._pending)):
            self._wait_oldest()
        weights, buffers = commit_copies(model, optimizer, meta, snapshots, resume, momentum)
        future = self._pool.submit(self._commit, work, epoch, weights, buffers, list(history), meta, snapshots, resume)
        self._pending.append((future, resume))

    def _commit(self, work, *args) -> None:  # in the thread
        if self._failed:
            raise RuntimeError("not committed: the commit before it failed")
        try:
            work.commit_state(*args)
        except BaseException:
            self._failed = True
            raise

    def _wait_oldest(self) -> None:
        future, _ = self._pending.pop(0)
        future.result()

    def wait(self) -> None:
        """Return once no commit is in flight; raise the error of the first that failed."""
        while self._pending:
            self._wait_oldest()

    def __enter__(self):
        BackgroundCommits._open.add(self)
        return self

    def __exit__(self, *exc):
        BackgroundCommits._open.discard(self)
        try:
            if exc[0] is None:
                self.wait()
            else:  # already failing: let the commits in flight finish, keep the first error
                while self._pending:
                    with contextlib.suppress(Exception):
                        self._wait_oldest()
        finally:
            self._pool.shutdown()
