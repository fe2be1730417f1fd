"""Check that this machine can run the notebooks: ``python -m tools.doctor`` (``make doctor``).

Runs in seconds and without network, and prints a table: each check, its status
and how to fix what is missing. ``FAIL`` marks what the notebooks cannot run
without (the exit status is then 1); ``warn`` marks what only some runs need,
such as the pretrained weights for a run without network.

Only the standard library (and :mod:`nbhelpers.lessons`, which needs nothing else) is
imported at the top, so that the doctor also runs where the project's packages
are missing, and says so.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from nbhelpers import lessons
from nbhelpers.lessons import PROJECT_ROOT, local_copy_of, marker_path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: read the installed project's metadata instead
    tomllib = None

KERNEL_NAME = "batch-inference"
"""The Jupyter kernel that ``make setup`` registers for the notebooks (their kernelspec)."""

PYTHON_VERSIONS = ((3, 10), (3, 13))
"""The oldest and newest Python the project supports (``requires-python`` in pyproject.toml)."""
IMPORT_NAMES = {"pillow": "PIL", "scikit-image": "skimage"}
"""Distribution names whose import name is not the name itself (minus ``-``)."""

GIB = 1024**3
DISK_FAIL_GIB = 2
DISK_WARN_GIB = 10
RAY_CHECK_TIMEOUT_S = 90

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass(frozen=True)
class Check:
    """One row of the doctor's table."""

    name: str
    status: str
    detail: str
    fix: str = ""
    found: dict = field(default_factory=dict, compare=False)
    """What the check measured, for the checks after it (the Ray check: cpus, gpus, nodes)."""


def supported_pythons() -> str:
    """``"3.10 to 3.13"``: the versions the project supports, for messages."""
    oldest, newest = (".".join(map(str, version)) for version in PYTHON_VERSIONS)
    return f"{oldest} to {newest}"


def check_python(version: tuple[int, ...] = tuple(sys.version_info[:3])) -> Check:
    """The Python version: one of :data:`PYTHON_VERSIONS`."""
    shown = ".".join(map(str, version))
    if PYTHON_VERSIONS[0] <= tuple(version[:2]) <= PYTHON_VERSIONS[1]:
        return Check("Python", OK, f"{shown} ({sys.executable})")
    return Check(
        "Python",
        FAIL,
        f"{shown}; the project needs Python {supported_pythons()}",
        "Install one of them, then `make setup PYTHON=python3.12` (it rebuilds .venv).",
    )


def required_packages() -> list[str]:
    """The project's dependencies, as ``pyproject.toml`` lists them (without the extras)."""
    if tomllib is None:
        try:
            requires = importlib.metadata.requires("nbhelpers") or []
        except importlib.metadata.PackageNotFoundError:
            return ["nbhelpers"]  # not installed: reported as a missing package
        return [requirement for requirement in requires if "extra ==" not in requirement]
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"])


def check_package(requirement: str) -> Check:
    """Whether one requirement (``"torch==2.14.1"``) is installed, in range, and importable."""
    name = re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0]
    wanted = requirement[len(name) :].split(";")[0]
    wanted = re.sub(r"^\[[^\]]*\]", "", wanted).strip()
    fix = "`make setup` (or `rm -rf .venv && make setup` for a fresh environment)."
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return Check(f"package {name}", FAIL, "not installed", fix)
    if wanted and not _version_matches(version, wanted):
        return Check(f"package {name}", FAIL, f"{version} installed, {wanted} needed", fix)
    module = IMPORT_NAMES.get(name.lower(), name.lower().replace("-", "_"))
    try:
        importlib.import_module(module)
    except Exception as error:  # noqa: BLE001 - any import failure is the finding
        return Check(
            f"package {name}", FAIL, f"{version}, but `import {module}` fails: {error}", fix
        )
    return Check(f"package {name}", OK, version)


def _version_matches(version: str, specifier: str) -> bool:
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:  # packaging ships with pip and setuptools; without it, do not judge
        return True
    return SpecifierSet(specifier).contains(version, prereleases=True)


def check_kernel(name: str = KERNEL_NAME) -> Check:
    """Whether Jupyter knows the project's kernel, and whether it runs this environment's Python.

    JupyterLab, VS Code and the notebooks' own metadata use this kernel name; a
    kernel of that name that starts another Python would run the notebooks there.
    """
    fix = (
        f"`make setup`, or `{sys.executable} -m ipykernel install --sys-prefix --name {name} "
        '--display-name "Python (batch inference)"`.'
    )
    try:
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    except ImportError:
        return Check("Jupyter kernel", FAIL, "jupyter_client is not installed", fix)
    try:
        spec = KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        return Check("Jupyter kernel", FAIL, f"{name!r} is not registered", fix)
    python = spec.argv[0] if spec.argv else ""
    if os.path.isabs(python) and Path(python).parent != Path(sys.executable).parent:
        return Check(
            "Jupyter kernel",
            WARN,
            f"{name!r} in {spec.resource_dir} starts {python}, not this environment's Python",
            f"Remove that kernel (`jupyter kernelspec remove {name}`) and run `make setup`.",
        )
    return Check("Jupyter kernel", OK, f"{name!r} in {spec.resource_dir}")


RAY_PROBE = """
import json, os, ray
kwargs = {} if os.environ.get("RAY_ADDRESS") else {"include_dashboard": False}
ray.init(**kwargs, log_to_driver=False)
total = ray.cluster_resources()
nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
gpus = total.get("GPU", 0)
problem = None
if gpus >= 1:  # Ray counts GPUs through NVML: can torch, in a one-GPU task, use them?
    try:
        from nbhelpers.pool import torch_can_use_the_gpus
        problem = torch_can_use_the_gpus()
    except ImportError as error:
        problem = f"cannot check whether torch can use them: {error}"
print(json.dumps({"cpus": total.get("CPU", 0), "gpus": gpus, "nodes": nodes, "gpu_problem": problem}))
ray.shutdown()
"""


def start_ray_probe() -> tuple[subprocess.Popen, float]:
    """Start Ray (or join ``RAY_ADDRESS``) in a separate process, while other checks run."""
    process = subprocess.Popen(
        [sys.executable, "-c", RAY_PROBE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, time.perf_counter()


def check_ray(
    probe: tuple[subprocess.Popen, float] | None = None, timeout_s: int = RAY_CHECK_TIMEOUT_S
) -> Check:
    """Whether Ray starts (see :func:`start_ray_probe`), and the CPUs and GPUs it sees."""
    process, start = probe or start_ray_probe()
    where = f"the cluster at RAY_ADDRESS={os.environ['RAY_ADDRESS']}" if _joins() else "locally"
    try:
        stdout, stderr = process.communicate(
            timeout=max(1, timeout_s - (time.perf_counter() - start))
        )
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return Check(
            "Ray",
            FAIL,
            f"did not start {where} within {timeout_s}s",
            "`ray stop --force` ends stale Ray processes; check free memory and /tmp.",
        )
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        last = (stderr.strip().splitlines() or ["(no message)"])[-1]
        fix = "See docs/clusters.md." if _joins() else "`ray stop --force`."
        return Check("Ray", FAIL, f"could not start {where}: {last[-300:]}", fix)
    found = json.loads(stdout.strip().splitlines()[-1])
    return Check(
        "Ray",
        OK,
        f"started {where} in {seconds:.0f}s: {found['cpus']:g} CPUs, {found['gpus']:g} GPUs, "
        f"{found['nodes']} node(s)",
        found=found,
    )


def _joins() -> bool:
    return bool(os.environ.get("RAY_ADDRESS"))


TORCH_CUDA_FIX = (
    "Install a CUDA build of torch that the GPU driver supports (`nvidia-smi` shows the "
    "driver's CUDA version; https://pytorch.org/get-started/locally/ gives the pip command), "
    "then `make setup`, which keeps it."
)


def check_torch_gpus(cluster_gpus: float = 0, gpu_problem: str | None = None) -> Check:
    """The GPUs torch sees in this process, and those of the cluster at ``RAY_ADDRESS``
    (``cluster_gpus``, from the Ray check). None is fine: every notebook runs on CPU.

    ``gpu_problem`` (from the Ray check, which asks torch in a one-GPU Ray task) says why
    torch cannot use the GPUs that Ray counts: a CPU-only build, or one made for a newer
    CUDA than the driver's. That fails: the pool would then run on the CPUs.
    """
    if gpu_problem:
        return Check("GPUs (torch)", FAIL, gpu_problem.split(": install")[0], TORCH_CUDA_FIX)
    try:
        import torch
    except ImportError:
        return Check("GPUs (torch)", FAIL, "torch is not installed", "`make setup`.")
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    here = f"{len(names)} here: {', '.join(names)}" if names else "none in this process"
    if _joins() and cluster_gpus:
        return Check(
            "GPUs (torch)",
            OK,
            f"{here}; the cluster at RAY_ADDRESS has {cluster_gpus:g}: the model actors run on "
            "them" + ("" if names else ", the single batch on this process's CPU"),
        )
    if not names:
        return Check(
            "GPUs (torch)",
            OK,
            "none: the notebooks run on CPU actors, on a subset of the data by default",
        )
    return Check("GPUs (torch)", OK, f"{len(names)}: {', '.join(names)}")


def check_cached_models() -> list[Check]:
    """Whether the pretrained weights the notebooks load are already on this machine."""
    fix = "`make prefetch` on a machine with network (the notebooks then run offline)."
    try:
        from tools import prefetch  # needs torch: deferred, the doctor runs without it too
    except Exception as error:  # noqa: BLE001 - report, do not crash
        return [Check("pretrained weights", WARN, f"cannot check ({error})", "`make setup`.")]
    found = {
        f"weights {name.split('_Weights')[0]}": prefetch.weights_are_cached(name)
        for name in lessons.torchvision_weights()
    }
    found |= {f"weights {m}": prefetch.hf_model_is_cached(m) for m in lessons.hub_models()}
    return [
        Check(name, OK, "cached")
        if cached
        else Check(name, WARN, "not cached: pretrained=True downloads them", fix)
        for name, cached in found.items()
    ]


def check_cached_datasets() -> list[Check]:
    """Whether the default datasets have a local copy made by ``make prefetch``."""
    fix = "`make prefetch` (or `make prefetch ARGS='--num-images 200'` for a subset)."
    checks = []
    for uri in lessons.datasets():
        copy = local_copy_of(uri)
        name = f"dataset {uri.split('@')[-1].rstrip('/')}"
        if copy is None:
            checks.append(Check(name, WARN, "no local copy: read from S3 (needs network)", fix))
        else:
            marker = json.loads(marker_path(copy).read_text())
            checks.append(Check(name, OK, f"{marker['num_images']} images in {copy}"))
    return checks


def check_disk(path: Path = PROJECT_ROOT) -> Check:
    """Free disk where the project lives: the environment, caches and outputs go there."""
    free = shutil.disk_usage(path).free / GIB
    detail = f"{free:.1f} GiB free in {path}"
    if free < DISK_FAIL_GIB:
        return Check("free disk", FAIL, detail, "Free some space: the environment needs ~6 GiB.")
    if free < DISK_WARN_GIB:
        return Check("free disk", WARN, detail, "Enough to run; tight for prefetching datasets.")
    return Check("free disk", OK, detail)


def run_checks(skip_ray: bool = False) -> list[Check]:
    """Every check, in the order of the table."""
    ray_probe = None if skip_ray else start_ray_probe()  # the slowest check runs meanwhile
    checks = [check_python()]
    checks += [check_package(requirement) for requirement in required_packages()]
    checks.append(check_kernel())
    cluster_gpus, gpu_problem = 0, None
    if ray_probe is not None:
        checks.append(check_ray(ray_probe))
        cluster_gpus = checks[-1].found.get("gpus", 0)
        gpu_problem = checks[-1].found.get("gpu_problem")
    checks.append(check_torch_gpus(cluster_gpus, gpu_problem))
    checks += check_cached_models()
    checks += check_cached_datasets()
    checks.append(check_disk())
    return checks


def format_table(checks: list[Check]) -> str:
    """The checks as an aligned text table: check, status, details, how to fix."""
    rows = [("check", "status", "details", "how to fix")]
    rows += [(c.name, c.status, c.detail, c.fix) for c in checks]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = []
    for i, row in enumerate(rows):
        cells = [row[j].ljust(widths[j]) for j in range(3)] + [row[3]]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 10)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the table; 1 when a required check failed, else 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-ray", action="store_true", help="do not start Ray")
    args = parser.parse_args(argv)
    checks = run_checks(skip_ray=args.skip_ray)
    print(format_table(checks))
    failed = [c.name for c in checks if c.status == FAIL]
    warned = [c.name for c in checks if c.status == WARN]
    if failed:
        print(f"\n{len(failed)} required check(s) failed: {', '.join(failed)}.")
        return 1
    summary = "Ready: every required check passed."
    if warned:
        summary += f" {len(warned)} warning(s): fine offline (pretrained=False), see above."
    print(f"\n{summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
