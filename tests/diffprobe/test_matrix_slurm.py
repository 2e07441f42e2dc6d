"""The matrix as a SLURM job array, on a real one-node cluster started by the test
(tests/slurm_cluster.py): the leaderboard equals a local run's, and a task killed by scancel is
rerun by the next call while the others are collected, not resubmitted."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from analysis.leaderboard import to_csv, build
from diffprobe.matrix.run import run_matrix
from diffprobe.matrix.slurm import SlurmOptions, queued
from tests.diffprobe.test_matrix import config
from tests.slurm_cluster import start_cluster, unavailable

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = unavailable()
    if why:
        pytest.skip(why)
    started = start_cluster(tmp_path_factory.mktemp("slurm"))
    yield started
    started.stop()


@pytest.fixture
def on_cluster(cluster, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    return cluster


def slurm_config(tmp_path, **kw):
    options = SlurmOptions(cpus_per_task=1, time=10, poll=0.5)
    return dataclasses.replace(config(tmp_path), executor="slurm", slurm=options, **kw)


def test_a_matrix_as_a_job_array_gives_the_local_leaderboard(tmp_path, fmnist_env, on_cluster):
    local = run_matrix(config(tmp_path / "local"), echo=lambda _: None)
    array = run_matrix(slurm_config(tmp_path / "slurm"), echo=lambda _: None)
    assert (array.ran, array.failed, array.missing) == (4, [], [])
    assert to_csv(build(array.lines)) == to_csv(build(local.lines))
    tasks = json.loads((tmp_path / "slurm" / "out" / "slurm" / "tasks.json").read_text())
    assert len({t.split("_")[0] for t in tasks.values()}) == 1 and len(tasks) == 4  # one array


def test_a_cancelled_task_is_rerun_by_the_next_call_and_the_others_collected(
    tmp_path, fmnist_env, on_cluster
):
    cfg = slurm_config(tmp_path, wait=False)
    first = run_matrix(cfg, echo=lambda _: None)
    assert first.ran == 4 and len(first.missing) == 4
    record = tmp_path / "out" / "slurm" / "tasks.json"
    tasks = json.loads(record.read_text())
    victim = sorted(tasks)[-1]  # the last task: still pending behind the first two on 2 CPUs
    on_cluster.run("scancel", tasks[victim])
    deadline = time.time() + 30
    while tasks[victim] in queued() and time.time() < deadline:
        time.sleep(0.2)
    done = run_matrix(dataclasses.replace(cfg, wait=True), echo=lambda _: None)
    assert (done.failed, done.missing) == ([], [])
    again = json.loads(record.read_text())
    assert again[victim] != tasks[victim]  # resubmitted
    # the others were queued or running, or had finished: none was submitted twice
    assert {c: t for c, t in again.items() if c != victim} == {c: t for c, t in tasks.items() if c != victim}
    last = run_matrix(cfg, echo=lambda _: None)
    assert (last.ran, last.skipped) == (0, 4)
