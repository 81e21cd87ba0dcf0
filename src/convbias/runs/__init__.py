"""A training run, from its first commit to its published folder: the one home of a run's files.

- :mod:`~convbias.runs.life` — :class:`Run`, a run's life in the words of a training loop:
  open, published?, resume, commit each epoch, publish; forget (the workflow's hooks).
- :mod:`~convbias.runs.work` — the work folder (``results/resume/<experiment>/seed<s>/``): how an
  epoch is committed (checksums, the progress file written last, cuts of earlier epochs), read
  back on resume, published (hard links, the manifest last, the published marker) and forgotten.
- :mod:`~convbias.runs.commits` — what a commit copies from training, and the thread that writes
  commits while the next epoch trains.
- :mod:`~convbias.runs.folder` — a finished run's folder (``results/runs/<experiment>/seed<s>/``):
  the one place that names a run's files; its manifest, checked by every job that reads it.
- :mod:`~convbias.runs.locks` — one process at a time on a run, one workflow at a time on a
  results folder.
"""

from .folder import HISTORY_COLUMNS, RunDamaged, RunFolder, replaced_because, seconds_left
from .life import DataParallelFailed, DiskFull, Run, amount, provenance
from .locks import ResultsBusy, hold_results_lock, lock_file, lock_holder, run_lock

__all__ = ["HISTORY_COLUMNS", "DataParallelFailed", "DiskFull", "ResultsBusy", "Run", "RunDamaged", "RunFolder",
           "amount", "hold_results_lock", "lock_file", "lock_holder", "provenance", "replaced_because", "run_lock",
           "seconds_left"]
