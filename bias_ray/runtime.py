"""Ray start-up and resource sizing shared by every stage.

On a small machine an actor pool that takes every CPU starves Ray Data's read tasks, so pools
and trial concurrency are sized from ``ray.available_resources()`` with one CPU left free.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from pathlib import Path


def quiet_libraries() -> None:
    """Silence progress bars and load reports that drown the CLI's own output."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # offline mode is the user's choice: never set here
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def cache_dir() -> Path:
    """Where bias-ray keeps what it computes once per machine (trained classifiers, model digests):
    $BIAS_RAY_CACHE, else ~/.cache/bias-ray."""
    return Path(os.environ.get("BIAS_RAY_CACHE", Path.home() / ".cache" / "bias-ray"))


HUB_ENV_PREFIXES = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_")


def hub_env() -> dict[str, str]:
    """The user's Hugging Face settings (HF_HOME, HF_HUB_OFFLINE, HF_ENDPOINT, ...) for every Ray worker.

    Secrets are left out: a runtime env is stored by Ray and shown by its job API and dashboard.
    Local workers inherit the driver's environment (a token too); on a cluster give each node its
    token itself (cluster/README.md).
    """
    return {k: v for k, v in os.environ.items()
            if k.startswith(HUB_ENV_PREFIXES) and not any(s in k for s in ("TOKEN", "KEY", "SECRET", "PASSWORD"))}


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to ``address`` (or $RAY_ADDRESS), else start a local Ray; idempotent.

    A local Ray gets no runtime env: its workers inherit the driver's environment (HF_*,
    PYTHONPATH, ...) anyway, and work with a runtime env cannot use the workers Ray starts ahead
    of time, so each task or actor would wait 1-2 s for a fresh process. A cluster's workers get
    the user's settings as a runtime env.
    """
    import ray

    if ray.is_initialized():
        return
    quiet_libraries()
    address = address or os.environ.get("RAY_ADDRESS")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # before a local Ray starts: its workers inherit it
    if address:
        env_vars = {k: os.environ[k] for k in ("PYTHONPATH", "BIAS_RAY_DATA", "WANDB_MODE", "BIAS_RAY_PLUGINS")
                    if k in os.environ}
        env_vars.update(hub_env())
        env_vars["TOKENIZERS_PARALLELISM"] = "false"
        options = {"runtime_env": {"env_vars": env_vars}}
    else:
        options = {
            "num_cpus": num_cpus,
            # a local Ray takes 30% of RAM for objects by default; streaming needs far less
            "object_store_memory": int(os.environ.get("BIAS_RAY_OBJECT_STORE_BYTES", 2 << 30)),
            "include_dashboard": False,
        }
    try:
        ray.init(
            address=address,
            logging_level=logging.WARNING,
            log_to_driver=os.environ.get("BIAS_RAY_LOG_TO_DRIVER", "1") == "1",  # 0: the CLI's quiet mode
            **options,
        )
    except ConnectionError as err:
        raise ConnectionError(
            f"cannot reach the Ray cluster at {address}: {err}. Start it with `ray start --head`, "
            "check the address, or unset RAY_ADDRESS to run locally"
        ) from None
    import ray.data

    ctx = ray.data.DataContext.get_current()
    # BIAS_RAY_DATA_PROGRESS=0: the CLI's quiet mode (bias_ray.progress) keeps Ray Data's own bars off
    ctx.enable_progress_bars = os.environ.get("BIAS_RAY_DATA_PROGRESS", os.environ.get("BIAS_RAY_PROGRESS", "1")) == "1"


_ray_data_warm_up: threading.Thread | None = None


def _run_a_tiny_dataset() -> None:
    try:
        import ray.data

        ray.data.range(1).materialize()
    except Exception:  # noqa: BLE001  (a failed warm-up only means the first real job pays the start)
        logging.getLogger(__name__).warning("Ray Data warm-up failed", exc_info=True)


def warm_ray_data(wait: bool = False) -> None:
    """Pay Ray Data's one-time start in this Ray session now, in a background thread.

    The first dataset a session runs waits seconds for Ray Data's own actors (stats, autoscaling
    coordinator) to start; later ones do not. The CLI calls this right after Ray is up, so the
    start overlaps the model preparation instead of delaying the generation job's first batch.
    ``wait``: block until it is done. Once per process; call after :func:`init_ray`.
    """
    global _ray_data_warm_up
    if _ray_data_warm_up is None:
        _ray_data_warm_up = threading.Thread(target=_run_a_tiny_dataset, name="ray-data-warm-up", daemon=True)
        _ray_data_warm_up.start()
    if wait:
        _ray_data_warm_up.join()


def cpu_budget(leave_free: float = 1.0) -> float:
    """CPUs that a pool or a set of trials may take while leaving ``leave_free`` for Ray's tasks."""
    import ray

    total = ray.available_resources().get("CPU", 1.0)
    return max(1.0, total - leave_free)
