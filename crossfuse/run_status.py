"""Whether a pipeline run's MLflow status tells the truth: heartbeats, and ending runs that
no task will end.

- A failing stage tags the run ``crossfuse.failed_stage`` before it marks it FAILED;
  :func:`end_stage` reads the tag after its own status write, so a stage that finishes after
  its sibling failed never revives the run (MLflow has no conditional write).
- While a stage runs, :func:`heartbeat` stamps ``crossfuse.heartbeat``; a task killed by the
  kernel stops stamping, and :func:`stale_runs` / :func:`mark_killed` (``crossfuse runs gc``)
  end its run KILLED.

Example
-------
>>> with heartbeat(run_id, every=30.0):               # doctest: +SKIP
...     train()
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

import mlflow
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

TERMINAL_FAILURES = ("FAILED", "KILLED")
HEARTBEAT_TAG = "crossfuse.heartbeat"  # unix seconds, stamped while a stage runs
FAILED_TAG = "crossfuse.failed_stage"  # set before the status; removed only by its own retry
ERROR_TAG = "crossfuse.error"


def end_stage(run_id: str, stage: str, final: bool) -> None:
    """Leave the active run RUNNING (FINISHED when ``final``), unless a task marked it failed.

    Resuming a run sets it RUNNING, and MLflow has no conditional write: an extract part
    finishing after its sibling failed would revive the run. A failing task sets
    ``crossfuse.failed_stage`` *before* the FAILED status, so reading the tag after our own
    status write finds every failure whose status write we could have overwritten. A failure
    of this very stage is an earlier attempt that KFP retried, and this attempt succeeded:
    its mark is removed.
    """
    client = MlflowClient()
    tags = client.get_run(run_id).data.tags
    if tags.get(FAILED_TAG) == stage:  # kept, as history: crossfuse.retried
        client.set_tag(run_id, "crossfuse.retried",
                       f"{stage} failed, then succeeded on a retry: {tags.get(ERROR_TAG, '')}"[:5000])
        client.delete_tag(run_id, FAILED_TAG)
        if ERROR_TAG in tags:
            client.delete_tag(run_id, ERROR_TAG)
    mlflow.end_run("FINISHED" if final else "RUNNING")
    run = client.get_run(run_id)
    if FAILED_TAG in run.data.tags and run.info.status not in TERMINAL_FAILURES:
        client.set_terminated(run_id, "FAILED")


@contextlib.contextmanager
def heartbeat(run_id: str, every: float) -> Iterator[None]:
    """Stamp ``crossfuse.heartbeat`` on ``run_id`` now and every ``every`` seconds until the
    block ends (a daemon thread; a failed stamp is logged, never raised)."""
    stop = threading.Event()
    client = MlflowClient()

    def stamp() -> None:
        try:
            client.set_tag(run_id, HEARTBEAT_TAG, str(int(time.time())))
        except Exception as exc:  # the tracking server is briefly away: the next beat
            log.warning("heartbeat not recorded: %s", exc)

    def beat() -> None:
        while not stop.wait(every):
            stamp()

    stamp()  # before the block starts: a stage is never without one
    thread = threading.Thread(target=beat, name="crossfuse-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def stale_runs(client: MlflowClient, experiment_ids: list[str], stale_seconds: float,
               now: float | None = None) -> list:
    """RUNNING runs whose last heartbeat (or, without one, start) is older than
    ``stale_seconds``: their task was killed without a word (an OOM-killed pod)."""
    now = time.time() if now is None else now
    runs = client.search_runs(experiment_ids, "attributes.status = 'RUNNING'", max_results=5000)
    stale = []
    for run in runs:
        beat = run.data.tags.get(HEARTBEAT_TAG)
        last = float(beat) if beat else run.info.start_time / 1000
        if now - last > stale_seconds:
            stale.append(run)
    return stale


def mark_killed(client: MlflowClient, run, stale_seconds: float) -> None:
    """End a stale run as KILLED, saying why on the run."""
    client.set_tag(run.info.run_id, FAILED_TAG, run.data.tags.get(FAILED_TAG, "unknown"))
    client.set_tag(run.info.run_id, ERROR_TAG,
                   f"no heartbeat for over {stale_seconds / 60:g} min: the task was killed "
                   f"(out of memory, node lost or cancelled); `crossfuse runs gc` ended it")
    client.set_terminated(run.info.run_id, "KILLED")
