"""What the terminal shows while a stage runs: one live view, and library logs in a file.

By default a command runs inside :func:`quiet_session`: everything Ray, Ray Data, Tune, W&B and
the C++ core worker print (Python streams and file descriptor 2 alike) goes to
``<output_dir>/logs/bias-ray.log``, while the CLI's console keeps the terminal for one live view
per stage (generation: samples/s and tokens/s; sweep: :class:`SweepView`; report: a status
line) and for errors, one line each with the log's path. ``--verbose`` leaves every stream on the
terminal as the libraries print it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ray.tune import Callback
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.text import Text

LOG_FILE = Path("logs") / "bias-ray.log"
log = logging.getLogger("bias_ray")


def log_path(run_dir: Path) -> Path:
    """Where a run's library logs go: ``<output_dir>/logs/bias-ray.log``."""
    return Path(run_dir) / LOG_FILE


def one_line(err: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _quiet_env() -> dict[str, str | None]:
    """Library settings that keep banners and progress bars out of the output; returns what it replaced."""
    from bias_ray.tracking import quiet_wandb

    quiet_wandb()
    changes = {"BIAS_RAY_DATA_PROGRESS": "0",  # Ray Data's own progress bars (bias_ray.runtime reads it)
               "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
               # workers' prints stay in Ray's session folder (/tmp/ray/session_latest/logs), not the driver
               "BIAS_RAY_LOG_TO_DRIVER": "0"}
    old = {k: os.environ.get(k) for k in changes}
    os.environ.update(changes)
    return old


@contextmanager
def quiet_session(run_dir: Path, console: Console, verbose: bool = False) -> Iterator[Path]:
    """Send every library's output to the run's log file; ``console`` keeps the terminal. Yields the log path.

    Python's ``sys.stdout``/``sys.stderr`` and file descriptor 2 (where Ray's C++ core worker and
    the processes Ray starts write) point at the log for the duration; everything is restored after.
    """
    path = log_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    if verbose:
        yield path
        return
    old_env = _quiet_env()
    import rich

    terminal = console.file
    global_console = rich.get_console()  # rich progress bars made without a console (generation) use it
    old_console_files = (console._file, global_console._file)
    console.file = terminal
    global_console.file = terminal
    stream = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115  (kept open: handlers may hold it)
    stream.write(f"\n===== bias-ray {' '.join(sys.argv[1:])} at {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n")
    old_streams = (sys.stdout, sys.stderr)
    saved_fd2 = None
    try:
        sys.stderr.flush()
        saved_fd2 = os.dup(2)
        os.dup2(stream.fileno(), 2)
    except (OSError, ValueError):  # no real descriptor 2 (an embedding host): Python streams only
        saved_fd2 = None
    sys.stdout = sys.stderr = stream
    moved = _move_stream_handlers(old_streams, stream)  # handlers Ray and others made at import time
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    errors = TerminalErrors(console, path)
    error_loggers = [logging.getLogger(), logging.getLogger("ray")]  # "ray" does not propagate to the root
    for lg in error_loggers:
        lg.addHandler(errors)
    try:
        yield path
    finally:
        stream.flush()
        log.removeHandler(handler)
        for lg in error_loggers:
            lg.removeHandler(errors)
        for h, old_stream in moved:
            h.setStream(old_stream)
        sys.stdout, sys.stderr = old_streams
        if saved_fd2 is not None:
            os.dup2(saved_fd2, 2)
            os.close(saved_fd2)
        console._file, global_console._file = old_console_files
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class TerminalErrors(logging.Handler):
    """Library log records at ERROR and above, as one terminal line each (the full record is in the log)."""

    def __init__(self, console: Console, path: Path) -> None:
        super().__init__(level=logging.ERROR)
        self.console, self.path = console, path
        self._last: logging.LogRecord | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record is self._last:  # reached through two of the loggers this handler is on
            return
        self._last = record
        try:
            lines = record.getMessage().strip().splitlines()
            first = lines[0] if lines else ""
            self.console.print(f"[red]error[/red] {escape(record.name)}: {escape(first[:300])} (details: {self.path})",
                               highlight=False, soft_wrap=True)
        except Exception:  # a handler must never raise into the library that logs
            self.handleError(record)


def _move_stream_handlers(terminal_streams: tuple, stream) -> list[tuple[logging.StreamHandler, Any]]:
    """Point every logging handler that writes to the terminal's streams at ``stream``; returns what moved."""
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    moved = []
    for lg in loggers:
        for h in lg.handlers:
            if type(h) is logging.StreamHandler and h.stream in terminal_streams:
                moved.append((h, h.setStream(stream)))
    return moved


def write_traceback(path: Path, err: BaseException) -> None:
    """The full traceback of ``err`` at the end of the log file."""
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(traceback.format_exception(type(err), err, err.__traceback__)))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class SweepProgress:
    """Counts of a sweep's trials, the best metric so far and an ETA; fed by :class:`SweepView`'s hooks.

    ETA = elapsed x (1 - f) / f, where f is the share of all optimizer steps of the grid done
    (a trial stopped early or failed counts as done).
    """

    def __init__(self, total_trials: int, metric: str, mode: str) -> None:
        self.total, self.metric, self.mode = total_trials, metric, mode
        self.started = time.monotonic()
        self.running: set[str] = set()
        self.done = self.stopped_early = self.failed = 0
        self.best: float | None = None
        self.best_trial = ""
        self.fraction: dict[str, float] = {}  # trial id -> share of its steps done

    def start(self, trial_id: str) -> None:
        self.running.add(trial_id)

    def result(self, trial_id: str, result: dict[str, Any]) -> None:
        value = result.get(self.metric)
        if isinstance(value, int | float) and (self.best is None or (value > self.best if self.mode == "max"
                                                                      else value < self.best)):
            self.best, self.best_trial = float(value), trial_id
        step, total = result.get("step"), result.get("total_steps")
        if isinstance(step, int | float) and isinstance(total, int | float) and total > 0:
            self.fraction[trial_id] = min(1.0, step / total)

    def complete(self, trial_id: str) -> None:
        self.running.discard(trial_id)
        self.done += 1
        if self.fraction.get(trial_id, 1.0) < 1.0:
            self.stopped_early += 1
        self.fraction[trial_id] = 1.0

    def error(self, trial_id: str) -> None:
        self.running.discard(trial_id)
        self.failed += 1
        self.fraction[trial_id] = 1.0

    def eta(self) -> float | None:
        share = sum(self.fraction.values()) / self.total if self.total else 1.0
        if share <= 0:
            return None
        return (time.monotonic() - self.started) * (1 - share) / share

    def line(self) -> Text:
        elapsed = time.monotonic() - self.started
        eta = self.eta()
        best = f"{self.best:.4f}" if self.best is not None else "-"
        text = Text.assemble(
            ("sweep ", "bold"), f"{self.done + self.failed}/{self.total} trials done  ",
            (f"{len(self.running)} running", "cyan"), "  ", (f"{self.stopped_early} stopped early", "yellow"), "  ",
            (f"{self.failed} failed", "red" if self.failed else "dim"),
            f"\n      best {self.metric} {best}  elapsed {_duration(elapsed)}  "
            f"ETA {_duration(eta) if eta is not None else '-'}",
        )
        return text


class SweepView(Callback):
    """A Ray Tune callback that draws :class:`SweepProgress` as one live line on ``console``.

    Tune pickles its callbacks with the experiment; the console and the live display are left
    out, so a restored experiment simply runs without the view.
    """

    def __init__(self, total_trials: int, metric: str, mode: str, console: Console) -> None:
        self.progress = SweepProgress(total_trials, metric, mode)
        self.console: Console | None = console
        self.live: Live | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"progress": self.progress, "console": None, "live": None}

    def setup(self, **info: Any) -> None:
        self.progress.started = time.monotonic()
        if self.console is not None:
            # no stdout/stderr redirect: library prints stay in the log, not above the view
            self.live = Live(self.progress.line(), console=self.console, refresh_per_second=2,
                             get_renderable=self.progress.line, redirect_stdout=False, redirect_stderr=False)
            self.live.start()

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.progress.start(trial.trial_id)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.progress.result(trial.trial_id, result)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.progress.complete(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.progress.error(trial.trial_id)

    def on_experiment_end(self, trials, **info) -> None:
        self.stop()

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
            if self.console is not None and not self.console.is_terminal:
                self.console.line()  # off a terminal the final line is printed without its end
