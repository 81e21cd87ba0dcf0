"""Rule convert: dataset source + variants → FFCV train/test files and meta.json."""

import sys

from convbias.data.convert import convert
from convbias.data.downloads import DOWNLOADABLE
from convbias.data.sources import DatasetError, MissingDataset
from convbias.harness import log_to

log_to(snakemake.log)  # this job's output goes to its rule's log file

# the typed spec the rule built (convbias.specs.DatasetSpec): its identity defines the files, its
# path and download say where they are read from
name, spec = snakemake.wildcards.dataset, snakemake.params.spec.typed
try:
    convert(name, spec, snakemake.output.train, snakemake.output.test, snakemake.output.meta,
            workers=snakemake.threads)
except DatasetError as err:
    fetch = isinstance(err, MissingDataset) and spec.source in DOWNLOADABLE and not spec.download
    sys.exit(f"dataset {name!r}: {err}. Put the files there, or set datasets.{name}.path in the config"
             + (f", or set datasets.{name}.download: true to fetch them (rule download)." if fetch else "."))
