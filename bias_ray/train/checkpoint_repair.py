"""Before a sweep resumes: give every trial the checkpoint its saved state names.

Tune keeps one checkpoint per trial (``CheckpointConfig(num_to_keep=1)``): when a trial reports
checkpoint n+1, the driver deletes checkpoint n at once, but it saves the experiment state, which
names each trial's latest checkpoint, later (every ``TUNE_GLOBAL_CHECKPOINT_S`` seconds, or sooner
once a trial has checkpointed ``num_to_keep`` times since the last save). A driver killed in between
(SIGKILL, a lost head node) leaves a state that names checkpoint n, which is gone, while n+1 lies
beside it. Ray 2.x then fails the trial at every restore ("Could not recover from
checkpoint as it does not exist on storage anymore") and a resumed sweep loses the trial.

The repair: for every trial that will restore (not finished), each checkpoint its saved state names
that is missing becomes a copy of the trial's newest checkpoint, which holds more training than the
one named. The trial resumes from that state (its step, adapter weights, optimizer and RNG: the
trainable reads them from the checkpoint), so no training is lost or repeated; Tune's iteration
counter of that trial restarts from the named checkpoint's, so the trial reports that many
iterations fewer in all.
"""

from __future__ import annotations

import json
import logging
import re
import uuid

import pyarrow.fs as pafs

log = logging.getLogger(__name__)

CHECKPOINT = re.compile(rb"checkpoint_(\d{6})")
FINISHED = {"TERMINATED"}


def _filesystem(experiment: str) -> tuple[pafs.FileSystem, str]:
    if "://" in experiment:
        return pafs.FileSystem.from_uri(experiment)
    return pafs.LocalFileSystem(), experiment


def _latest_state(fs: pafs.FileSystem, experiment: str) -> dict | None:
    found = fs.get_file_info(pafs.FileSelector(experiment, allow_not_found=True))
    states = sorted(f.path for f in found if f.base_name.startswith("experiment_state-") and f.path.endswith(".json"))
    if not states:
        return None
    with fs.open_input_stream(states[-1]) as f:
        return json.loads(f.read())


def _named_checkpoints(metadata: dict) -> set[str]:
    """The checkpoint folders a trial's saved checkpoint manager names (it is stored pickled, hex)."""
    manager = metadata.get("checkpoint_manager")
    value = manager.get("value") if isinstance(manager, dict) else None
    if not isinstance(value, str):
        return set()
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return set()
    return {f"checkpoint_{m.decode()}" for m in CHECKPOINT.findall(raw)}


def repair_missing_checkpoints(experiment: str) -> list[str]:
    """Copy each unfinished trial's newest checkpoint to the names its saved state gives that are
    missing; returns ``"trial: missing <- newest"`` for each copy. Anything unreadable is left alone
    (Tune then reports it as before)."""
    fs, root = _filesystem(experiment)
    try:
        state = _latest_state(fs, root)
    except (OSError, ValueError) as err:
        log.warning("checkpoint repair skipped: the experiment state under %s could not be read (%s)", experiment, err)
        return []
    repaired = []
    for entry in (state or {}).get("trial_data", []):
        try:
            trial, metadata = json.loads(entry[0]), json.loads(entry[1])
        except (TypeError, ValueError, IndexError):
            continue
        logdir = trial.get("relative_logdir")
        if trial.get("status") in FINISHED or not logdir:
            continue
        named = _named_checkpoints(metadata)
        if not named:
            continue
        trial_dir = f"{root}/{logdir}"
        present = {f.base_name for f in fs.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True))
                   if f.type == pafs.FileType.Directory and CHECKPOINT.fullmatch(f.base_name.encode())}
        if not present:
            continue
        newest = max(present)
        for missing in sorted(named - present):
            if missing > newest:  # a checkpoint newer than any on storage: nothing holds its training
                continue
            partial = f"{trial_dir}/.{missing}.tmp-{uuid.uuid4().hex}"  # a copy cut short is never named
            try:
                fs.create_dir(partial, recursive=True)
                pafs.copy_files(f"{trial_dir}/{newest}", partial, source_filesystem=fs, destination_filesystem=fs)
                fs.move(partial, f"{trial_dir}/{missing}")
            except OSError as err:
                log.warning("resume: could not restore %s/%s from %s (%s); Tune will fail that trial's restore",
                            logdir, missing, newest, err)
                continue
            repaired.append(f"{logdir}: {missing} <- {newest}")
    for line in repaired:
        log.warning("resume: the saved experiment state named a checkpoint Tune had deleted; restored %s", line)
    return repaired
