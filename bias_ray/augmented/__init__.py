"""The store of augmented data: the contract between generate, import, mix, train and analysis.

:mod:`~bias_ray.augmented.store` holds its on-disk format (layout, shard columns, the row
directory, the manifest) and the atomic writes that generation and import make;
:mod:`~bias_ray.augmented.finalize` counts a finished job's shards, drops exact duplicates and
writes the row directory;
:mod:`~bias_ray.augmented.read` holds the column- and row-pruned readers the other stages use.
A layer below the stages: it imports none of them.
"""

from bias_ray.augmented.read import (
    AUGMENTED_COLUMNS,
    augmented_rows,
    augmented_strata,
    iter_kept_batches,
    load_augmented,
)
from bias_ray.augmented.store import JOB_CONSTANTS, ROW_DIRECTORY, SHARD_COLUMNS, finished_job, is_imported

__all__ = ["AUGMENTED_COLUMNS", "JOB_CONSTANTS", "ROW_DIRECTORY", "SHARD_COLUMNS", "augmented_rows", "augmented_strata",
           "finished_job", "is_imported", "iter_kept_batches", "load_augmented"]
