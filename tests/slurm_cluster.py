"""A one-node SLURM cluster for tests: munged, slurmctld and slurmd from Debian's slurm-wlm and
munge, started as root with every path under one folder (ProctrackType=proctrack/linuxproc,
TaskPlugin=task/none), stopped afterwards. `start_cluster` says why it cannot run instead of
failing: the daemons are not installed, or this is not root."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel")


@dataclass
class Cluster:
    folder: Path
    conf: Path
    env: dict[str, str]
    processes: list[subprocess.Popen]
    munge: Path

    def run(self, *args: str) -> str:
        return subprocess.run(args, env=self.env, capture_output=True, text=True, check=True).stdout

    def stop(self) -> None:
        subprocess.run(["scontrol", "shutdown"], env=self.env, capture_output=True)
        for p in self.processes:
            p.terminate()
        for p in self.processes:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.munge, ignore_errors=True)


def unavailable() -> str | None:
    missing = [d for d in DAEMONS if shutil.which(d) is None]
    if missing:
        names = ", ".join(missing)
        return f"slurm-wlm and munge are not installed ({names} missing; apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "starting slurmctld and munged needs root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 - 512
    return 1024


def start_cluster(folder: Path, cpus: int | None = None, timeout: float = 60.0) -> Cluster:
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    host = socket.gethostname().split(".")[0]
    cpus = cpus or os.cpu_count() or 1
    # munged wants every folder above its socket searchable by all: pytest's tmp_path is not
    munge = Path(tempfile.mkdtemp(prefix="diffprobe-munge-"))
    shutil.chown(munge, "munge", "munge")
    munge.chmod(0o755)  # munged wants its socket folder searchable by all
    key, sock = munge / "munge.key", munge / "munge.socket"
    subprocess.run(["mungekey", "-c", "-k", str(key)], check=True, capture_output=True)
    shutil.chown(key, "munge", "munge")
    key.chmod(0o400)
    munged = subprocess.Popen(
        [
            "runuser",
            "-u",
            "munge",
            "--",
            "munged",
            "-F",
            "--key-file",
            str(key),
            "-S",
            str(sock),
            "--pid-file",
            str(munge / "munged.pid"),
            "--log-file",
            str(munge / "munged.log"),
            "--seed-file",
            str(munge / "munged.seed"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for name in ("state", "spool"):
        (folder / name).mkdir(exist_ok=True)
    conf = folder / "slurm.conf"
    conf.write_text(
        f"ClusterName=diffprobe-test\nSlurmctldHost={host}\nSlurmUser=root\nSlurmdUser=root\n"
        f"SlurmctldPort={_free_port()}\nSlurmdPort={_free_port()}\n"
        f"AuthType=auth/munge\nAuthInfo=socket={sock}\nCredType=cred/munge\n"
        "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n"
        "SelectType=select/cons_tres\nSelectTypeParameters=CR_Core\n"
        "ReturnToService=2\nMpiDefault=none\nSchedulerType=sched/backfill\n"
        "JobAcctGatherType=jobacct_gather/none\nAccountingStorageType=accounting_storage/none\n"
        f"StateSaveLocation={folder / 'state'}\nSlurmdSpoolDir={folder / 'spool'}\n"
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}\nSlurmdPidFile={folder / 'slurmd.pid'}\n"
        f"SlurmctldLogFile={folder / 'slurmctld.log'}\nSlurmdLogFile={folder / 'slurmd.log'}\n"
        f"NodeName={host} CPUs={cpus} RealMemory={_memory_mb()} State=UNKNOWN\n"
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP\n"
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    for _ in range(50):
        if sock.exists():
            break
        time.sleep(0.1)
    ctld = subprocess.Popen(
        ["slurmctld", "-D", "-i", "-f", str(conf)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    slurmd = subprocess.Popen(
        ["slurmd", "-D", "-f", str(conf)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    cluster = Cluster(folder, conf, env, [slurmd, ctld, munged], munge)
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip() in ("idle", "mixed", "allocated"):
            return cluster
        time.sleep(0.5)
    logs = "; ".join(
        (folder / f).read_text()[-400:] for f in ("slurmctld.log", "slurmd.log") if (folder / f).exists()
    )
    cluster.stop()
    raise RuntimeError(f"the test cluster did not come up in {timeout:.0f} s: {logs}")
