"""A trial on several workers: a Ray Train ``TorchTrainer`` launched from the Tune trial.

``resources.workers_per_trial: N > 1`` trains each trial on ``N`` Ray Train workers, each with
``cpus_per_trial / N`` CPUs and ``gpus_per_trial / N`` GPUs, placed by ``placement_strategy`` in one placement
group that Ray Train reserves (the Tune trial itself holds no CPU or GPU, only a token of memory, so the two
never wait on each other).
It is Ray's pattern for Train inside Tune (Train V2): the Tune trial is the driver of a Train run.

- Each worker runs :func:`bias_ray.train.trainable.fit` on the same mix, with its
  :class:`~bias_ray.train.collective.Collective`: a step's rows are dealt over the workers and the gradients
  averaged (data parallel: every worker holds the whole student), the loss mitigation's batch statistics and
  the mitigations' counters are global (see :mod:`bias_ray.train.collective`). With ``training.fsdp`` the
  student is sharded over the workers (FSDP2), for students larger than one GPU.
- Rank 0 alone evaluates (sharded, all evaluate, since a sharded forward needs them all); every evaluation is
  one Ray Train report, with rank 0's metrics and checkpoint (gathered in full when sharded). A
  callback on the Train controller hands each report to the trial (a class trainable), which returns it to Tune
  as one result and checkpoint, so Tune's schedulers (ASHA included) stop the trial like any other, a stopped
  trial aborts its Train run (workers and placement group freed at once), and a retried or resumed trial starts
  from Tune's checkpoint, as a one-worker trial does.
- ``torch.distributed`` runs over gloo on CPUs and NCCL on GPUs (Ray Train sets the process group up).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

from bias_ray.spec import SweepSpec, parse_spec
from bias_ray.train.collective import Collective
from bias_ray.train.trainable import STATE_FILE, cell_name, fit, load_state


def worker_loop(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker of a trial: fit with this worker's collective; rank 0 writes the checkpoint."""
    import ray.train
    import torch

    from bias_ray.runtime import quiet_libraries

    quiet_libraries()
    context = ray.train.get_context()
    spec = parse_spec(loop_config["spec"], check_files=False)
    collective = Collective(context.get_world_rank(), context.get_world_size(), sharded=spec.training.fsdp)
    config = loop_config["config"]
    if spec.resources.gpus_per_trial and torch.cuda.is_available():
        import ray.train.torch

        torch.cuda.set_device(ray.train.torch.get_device())  # "cuda" in fit is then this worker's GPU
    state = None
    if loop_config.get("state") is not None:  # the checkpoint Tune restored, as bytes through the object store
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / STATE_FILE).write_bytes(loop_config["state"])
            state = load_state(Path(d) / STATE_FILE, spec.run_dir / "corrupt", config)

    def report(metrics: dict[str, Any], state: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as d:
            saved = None
            if collective.is_leader:
                torch.save(state, Path(d) / STATE_FILE)
                saved = ray.train.Checkpoint.from_directory(d)
            ray.train.report(metrics, checkpoint=saved)

    fit(spec, config, report, state, collective)


def scaling_config(spec: SweepSpec) -> Any:
    """The trial's Train workers: ``workers_per_trial`` of ``cpus_per_trial / N`` CPUs and ``gpus_per_trial / N``
    GPUs, one placement group placed by ``placement_strategy``."""
    from ray.train import ScalingConfig

    r = spec.resources
    per_worker = {"CPU": r.cpus_per_trial / r.workers_per_trial}
    if r.gpus_per_trial:
        per_worker["GPU"] = r.gpus_per_trial / r.workers_per_trial
    return ScalingConfig(num_workers=r.workers_per_trial, use_gpu=bool(r.gpus_per_trial),
                         resources_per_worker=per_worker, placement_strategy=r.placement_strategy)


def _forward_reports_callback(queue: Any) -> Any:
    """A Train callback (it runs on the Train controller) that puts rank 0's metrics, the checkpoint of each
    report and the controller's own handle (to abort the run) into ``queue`` for the trial."""
    import ray
    from ray.train.v2.api.callback import UserCallback

    class ForwardReports(UserCallback):
        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            queue.put((dict(metrics[0]), checkpoint, ray.get_runtime_context().current_actor))

    return ForwardReports()


class TrainRun:
    """One attempt of a trial as a Ray Train run of ``workers_per_trial`` workers, started at once.

    :meth:`next_report` hands over each report (metrics, checkpoint) in turn; :meth:`close` aborts a run that
    has not finished, so its workers and their placement group are freed at once (a Tune stop, a failure).
    """

    def __init__(self, spec: SweepSpec, spec_dict: dict[str, Any], config: dict[str, Any], state: bytes | None,
                 storage_path: str) -> None:
        from ray.train import CheckpointConfig, FailureConfig, RunConfig
        from ray.train.torch import TorchConfig, TorchTrainer
        from ray.util.queue import Queue

        scaling = scaling_config(spec)
        self.cell = cell_name(config)
        self._queue = Queue(actor_options={"num_cpus": 0})
        self._controller: Any = None
        self._failure: list[BaseException] = []
        trainer = TorchTrainer(
            worker_loop,
            train_loop_config={"spec": spec_dict, "config": {**config, "cpus": scaling.resources_per_worker["CPU"]},
                               "state": state},
            torch_config=TorchConfig(backend="nccl" if spec.resources.gpus_per_trial else "gloo"),
            scaling_config=scaling,
            run_config=RunConfig(
                # a new Train run per attempt: an attempt resumes from Tune's checkpoint, not Train's own
                name=f"{self.cell}-{uuid.uuid4().hex[:8]}",
                storage_path=storage_path,
                callbacks=[_forward_reports_callback(self._queue)],
                failure_config=FailureConfig(max_failures=0),  # Tune retries the trial
                checkpoint_config=CheckpointConfig(num_to_keep=1),
            ),
        )

        def run() -> None:
            try:
                trainer.fit()
            except BaseException as err:  # noqa: BLE001 - raised again by next_report
                self._failure.append(err)

        self._runner = threading.Thread(target=run, name=f"train-{self.cell}", daemon=True)
        self._runner.start()

    def next_report(self) -> tuple[dict[str, Any], Any]:
        """The next report's metrics and checkpoint; raises the run's error when it failed instead."""
        from ray.util.queue import Empty

        while self._runner.is_alive() or not self._queue.empty():
            try:
                metrics, checkpoint, self._controller = self._queue.get(timeout=0.5)
                return metrics, checkpoint
            except Empty:
                continue
        if self._failure:
            raise self._failure[0]
        raise RuntimeError(f"trial {self.cell}: its Train run ended before its last report")

    def close(self) -> None:
        import ray

        if self._runner.is_alive() and self._controller is not None:
            # the controller shuts its workers down and removes their placement group, then exits (so the call
            # raises); a dead one has nothing left to free
            with contextlib.suppress(Exception):
                ray.get(self._controller.abort.remote(), timeout=120)
        self._runner.join(timeout=60)
        self._queue.shutdown()


def trial_on_workers_trainable() -> type:
    """The Tune trainable of a trial on several workers (a class: Tune calls its ``cleanup`` when it stops a
    trial, and the trial then aborts its Train run, which a function trainable has no hook for)."""
    from ray import tune

    class TrialOnWorkers(tune.Trainable):
        """One grid cell trained by a :class:`TrainRun`; each Train report is one Tune result and checkpoint."""

        def setup(self, config: dict[str, Any], spec_dict: dict[str, Any], train_storage: str) -> None:
            from bias_ray.runtime import quiet_libraries

            quiet_libraries()
            self._cell_spec_dict, self._train_storage = spec_dict, train_storage
            self._cell_spec = parse_spec(spec_dict, check_files=False)
            self._resume_state: bytes | None = None  # a restored checkpoint's state: where the run resumes
            self._train_run: TrainRun | None = None
            self._last_checkpoint: Any = None

        def step(self) -> dict[str, Any]:
            if self._train_run is None:
                self._train_run = TrainRun(self._cell_spec, self._cell_spec_dict, dict(self.config),
                                           self._resume_state, self._train_storage)
            metrics, self._last_checkpoint = self._train_run.next_report()
            return {**metrics, "should_checkpoint": self._last_checkpoint is not None,
                    "done": metrics["step"] >= metrics["total_steps"]}

        def save_checkpoint(self, checkpoint_dir: str) -> None:
            with self._last_checkpoint.as_directory() as d:
                shutil.copy(Path(d) / STATE_FILE, Path(checkpoint_dir) / STATE_FILE)

        def load_checkpoint(self, checkpoint_dir: str) -> None:
            path = Path(checkpoint_dir) / STATE_FILE
            self._resume_state = path.read_bytes() if path.exists() else None

        def cleanup(self) -> None:
            if self._train_run is not None:
                self._train_run.close()

    return TrialOnWorkers
