"""What a benchmark run takes from the machine, sampled while it runs: memory, shared memory,
GPU utilisation, and CPU time per service (Ray's daemons, its workers, the driver)."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import psutil

DAEMONS = (
    ("gcs_server", "Ray: GCS (cluster state)"),
    ("raylet", "Ray: raylet (scheduler, object store)"),
    ("log_monitor.py", "Ray: log monitor (worker output to the driver)"),
    ("autoscaler/_private/monitor.py", "Ray: autoscaler monitor"),
    ("dashboard/dashboard.py", "Ray: dashboard head (state API)"),
    ("runtime_env/agent/main.py", "Ray: runtime-env agent"),
    ("dashboard/agent.py", "Ray: dashboard agent (metrics, events)"),
)
"""Ray's processes outside its workers, by a fragment of their command line."""
WORKERS = (
    ("IDLE", "Ray: idle workers"),  # IDLE_WORKERS
    ("MapWorker(", "model actor"),
    ("DashboardAgent", "Ray: dashboard agent (metrics, events)"),
    ("RuntimeEnvAgent", "Ray: runtime-env agent"),
    ("Predictor", "model actor"),
    ("MapBatches(", "read tasks (decode)"),
    ("ReadImage", "read tasks (decode)"),
    ("Map(", "read tasks (decode)"),
    ("Write", "write tasks"),
)
"""Ray's worker processes, by the title Ray gives them (``ray::<task or actor>``)."""


IDLE_WORKERS = "Ray: idle workers"
"""A Ray worker between tasks: its CPU since the last sample goes to the task it last ran,
which it was finishing (a worker that never ran one keeps this name)."""

IDLE_CPU = "(no process: the CPUs idle)"
"""The machine's idle CPU time, counted beside the services: what no process used."""


def service_of(process: psutil.Process, pipeline_pid: int) -> str:
    """The service a process of the run belongs to (see :data:`DAEMONS` and :data:`WORKERS`);
    another Ray worker by its own title (Ray Data's helper actors: ``ray::_StatsActor``)."""
    if process.pid == pipeline_pid:
        return "the pipeline's own process (driver)"
    try:
        command = process.cmdline()
    except psutil.Error:
        return "other"
    if command and command[0].startswith("ray::"):
        title = command[0].split()[0].split(".")[0]  # ray::_StatsActor.get: ray::_StatsActor
        return next((s for fragment, s in WORKERS if fragment in title), f"Ray: {title[5:]}")
    line = " ".join(command)
    if "benchmarks.pipelines" in line:
        return "DataLoader workers"
    if "default_worker.py" in line:
        return "Ray: workers starting (before they take a task)"
    script = next((Path(part).name for part in command if part.endswith(".py")), line[:60])
    return next((service for fragment, service in DAEMONS if fragment in line), f"other: {script}")


class MemorySampler:
    """Peak resident memory of this process and all it starts, and peak growth of shared memory;
    per service (:func:`service_of`), CPU seconds and peak resident memory.

    Ray's object store lives in shared memory (``/dev/shm``): the growth of the
    machine's ``Shmem`` is its high-water mark (for the DataLoader, the tensors its
    workers pass on). Other programs on the machine count too. Resident memory counts
    pages shared between processes (torch's libraries) once per process, as ``ps`` does;
    the proportional share (PSS, each shared page split among its users) is sampled too,
    once a second: what the processes together take from the machine.
    """

    def __init__(self):
        self.peak_rss = self.peak_shared = self.peak_pss = 0
        self.shared_at_start = self.shared()
        self.idle_at_start = self.idle_cpu()
        self.gpu_busy: list[tuple[float, float]] = []  # (time, % busy), where there is a GPU
        self.pipeline_pid = 0  # the pipeline's process, once started
        self.cpu_seen: dict[int, float] = {}  # pid: its CPU seconds at the last sample
        self.last_task: dict[int, str] = {}  # pid: the service it last ran, before idling
        self.service_cpu: dict[str, float] = {}  # service: CPU seconds, sample by sample
        self.cpu_ticks: list[tuple[float, dict[str, float]]] = []  # (time, CPU s per service)
        self.service_rss: dict[str, int] = {}  # service: peak resident memory
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    @staticmethod
    def gpu_utilization() -> float | None:
        """The busiest GPU's utilisation in % (``nvidia-smi``), or ``None`` without a GPU."""
        if not shutil.which("nvidia-smi"):
            return None
        query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        result = subprocess.run(query, capture_output=True, text=True, timeout=10)
        values = [float(v) for v in result.stdout.split() if v.replace(".", "").isdigit()]
        return max(values) if result.returncode == 0 and values else None

    @staticmethod
    def idle_cpu() -> float:
        """The machine's idle CPU seconds since it booted (waiting for I/O included)."""
        machine = psutil.cpu_times()
        return machine.idle + getattr(machine, "iowait", 0.0)

    @staticmethod
    def shared() -> int:
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        return next(
            (int(line.split()[1]) * 1024 for line in meminfo if line.startswith("Shmem:")), 0
        )

    def sample(self) -> None:
        ticks = 0
        while not self.stop.wait(0.25):
            ticks += 1
            if ticks % 4 == 0 and (busy := self.gpu_utilization()) is not None:
                self.gpu_busy.append((time.time(), busy))
            rss = pss = 0
            per_service: dict[str, int] = {}
            for process in psutil.Process().children(recursive=True):
                try:
                    memory = process.memory_info().rss
                    times = process.cpu_times()
                    if ticks % 4 == 0:
                        pss += process.memory_full_info().pss
                except psutil.Error:
                    continue
                # Asked each time: a worker's title changes with its task, and a process
                # shows Ray's title only once it has set it. The CPU time since the last
                # sample goes to what the process is now.
                service = service_of(process, self.pipeline_pid)
                if service == IDLE_WORKERS:  # since the last sample it may have finished a task
                    service = self.last_task.get(process.pid, service)
                elif process.pid != self.pipeline_pid:
                    self.last_task[process.pid] = service
                used = times.user + times.system
                spent = used - self.cpu_seen.get(process.pid, 0.0)
                self.cpu_seen[process.pid] = used
                self.service_cpu[service] = self.service_cpu.get(service, 0.0) + spent
                per_service[service] = per_service.get(service, 0) + memory
                rss += memory
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.peak_shared = max(self.peak_shared, self.shared() - self.shared_at_start)
            for service, memory in per_service.items():
                self.service_rss[service] = max(self.service_rss.get(service, 0), memory)
            totals = dict(self.service_cpu)
            totals[IDLE_CPU] = self.idle_cpu() - self.idle_at_start
            self.cpu_ticks.append((time.time(), totals))

    def services(self, steady: tuple[float, float] | None) -> dict[str, dict]:
        """Per service: CPU seconds over the run and between ``steady``'s two times (the first
        and the last batch), and peak resident memory (MiB)."""
        if not self.cpu_ticks:
            return {}
        last = self.cpu_ticks[-1][1]
        window: dict[str, float] = {}
        if steady:
            inside = [totals for at, totals in self.cpu_ticks if steady[0] <= at <= steady[1]]
            if len(inside) >= 2:
                window = {k: v - inside[0].get(k, 0.0) for k, v in inside[-1].items()}
        return {
            service: {
                "cpu_seconds": last.get(service, 0.0),
                "steady_cpu_seconds": window.get(service),
                "peak_rss_mib": self.service_rss.get(service, 0) / 2**20,
            }
            for service in sorted(set(last) | set(self.service_rss))
        }

    def __enter__(self) -> MemorySampler:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
