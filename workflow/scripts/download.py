"""Rule download_<source>: the source's published files into resources/<source>, MD5-checked."""

import os

os.environ.setdefault("TQDM_MININTERVAL", "5")  # torchvision's download bar, in a log file

from convbias.data.downloads import download_folder, fetch
from convbias.harness import log_to, stops_with_one_sentence

log_to(snakemake.log)  # this job's output goes to its rule's log file

job = snakemake.params.spec.typed  # convbias.specs.DownloadSpec: a new mirror downloads nothing again
with stops_with_one_sentence():
    for path in fetch(job.source, download_folder(job.source), job.mirror):
        print(f"{path}: {os.path.getsize(path)} bytes, MD5 checked")
