"""Where results go: a local folder, or ``s3://`` on a real local S3 server; the device the
single batch runs on; checked before any model work."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pyarrow.fs as pafs
import pytest

from nbhelpers.destination import WRITE_TASK_CPUS, OutputLocationError, output_location
from nbhelpers.evaluate import HALF_PRECISION_TOLERANCE, parity_tolerance
from nbhelpers.results import read_predictions, write_summary

SUMMARY = {"num_images_in": 2, "num_predicted": 1, "num_failed": 1}


def test_a_local_folder_is_created_and_written(tmp_path):
    output = output_location(tmp_path / "new" / "run")
    assert output.is_local and output.path == str(tmp_path / "new" / "run")
    assert output.predictions == f"{output.path}/predictions"
    assert (tmp_path / "new" / "run").is_dir()
    assert list((tmp_path / "new" / "run").iterdir()) == []  # the test write left nothing
    assert json.loads(open(write_summary(output, SUMMARY)).read()) == SUMMARY


def test_a_relative_folder_becomes_absolute(tmp_path, monkeypatch):
    """Ray's workers do not share the notebook's working directory."""
    monkeypatch.chdir(tmp_path)
    assert output_location("results").path == str(tmp_path / "results")


def test_a_folder_that_cannot_be_made_is_refused_naming_output_dir(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(OutputLocationError, match=r"output_dir '.*a-file/run' cannot be written"):
        output_location(tmp_path / "a-file" / "run")


def test_other_schemes_and_anonymous_s3_are_refused():
    with pytest.raises(OutputLocationError, match="only a local folder or s3://"):
        output_location("gs://bucket/results")
    with pytest.raises(OutputLocationError, match="anonymous@ reads public buckets but cannot"):
        output_location("s3://anonymous@air-example-data/results")


def test_s3_results_are_written_and_read_back_through_the_same_file_system(private_env):
    output = output_location("s3://team-photos/results/unit")
    assert not output.is_local and output.ray_remote_args == {"num_cpus": WRITE_TASK_CPUS}
    assert output.path == "team-photos/results/unit"
    assert write_summary(output, SUMMARY) == "s3://team-photos/results/unit/summary.json"
    s3 = private_env.client()
    body = s3.get_object(Bucket="team-photos", Key="results/unit/summary.json")["Body"].read()
    assert json.loads(body) == SUMMARY
    frame = pd.DataFrame({"path": ["b", "a"], "error": [None, "empty file"], "label": ["x", None]})
    with output.filesystem.open_output_stream(f"{output.predictions}/part-0.parquet") as stream:
        frame.to_parquet(stream, index=False)
    back = read_predictions(output, ["a", "b"], columns=["label"])
    assert back["path"].tolist() == ["a", "b"] and back["error"].tolist() == ["empty file", None]
    assert pd.isna(back["label"].iloc[0]) and back["label"].iloc[1] == "x"
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket="team-photos")["Contents"]]
    assert not [key for key in keys if ".write-test-" in key]  # the test write was removed


def test_s3_that_refuses_writing_stops_before_the_work(private_env, monkeypatch):
    with pytest.raises(OutputLocationError, match="refused a test write"):
        output_location("s3://no-such-bucket/results")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    with pytest.raises(OutputLocationError, match="s3://team-photos/results.*refused a test write"):
        output_location("s3://team-photos/results")


def test_parity_tolerance_says_why_it_is_wider_in_half_precision():
    assert parity_tolerance("cpu", "cpu", same_device=1e-3) == (
        1e-3,
        "Both on the CPU in float32: scores within 0.001.",
    )
    tolerance, why = parity_tolerance("cpu", "cuda", same_device=1e-3)
    assert tolerance == HALF_PRECISION_TOLERANCE and why.startswith("The single batch on cpu")
    tolerance, why = parity_tolerance("cuda", "cuda", same_device=1e-3)
    assert tolerance == HALF_PRECISION_TOLERANCE and "batches of other sizes" in why
    assert parity_tolerance("cpu", "cuda", same_device=0.05)[0] == 0.05


ON_A_REAL_RAY = """
import json, sys
import ray
from nbhelpers import pool
from nbhelpers.pool import ClusterResources, GPUUnavailableError, local_device, size_actor_pool
from nbhelpers.destination import output_location

found = {}
# Ray counts a GPU that torch (a CPU build, here) cannot use: the pool plans CPUs, and says why.
ray.init(num_cpus=2, num_gpus=1, include_dashboard=False)
resources = ClusterResources.from_ray()
found["unusable"] = [resources.gpus, size_actor_pool(resources).use_gpu, resources.describe()]
try:
    size_actor_pool(resources, use_gpu=True)
except GPUUnavailableError as error:
    found["required"] = str(error)
# A cluster whose GPUs torch can use, seen from a process that has none (a CPU-only head node).
pool.torch_can_use_the_gpus = lambda: None  # what the check finds on a real GPU node
plan = size_actor_pool(ClusterResources.from_ray())
found["gpu_cluster"] = [plan.use_gpu, plan.device, local_device(plan)]
found["pinned"] = output_location(sys.argv[1]).ray_remote_args.get("num_cpus")
ray.shutdown()
# A node that offers no CPU, as a head node started with --num-cpus 0.
ray.init(num_cpus=0, include_dashboard=False)
args = output_location(sys.argv[1]).ray_remote_args
found["no_cpu"] = [args.get("num_cpus"), type(args["scheduling_strategy"]).__name__]
ray.shutdown()
print(json.dumps(found))
"""


def test_devices_and_write_tasks_follow_what_each_node_really_has(tmp_path):
    """A real Ray: the plan follows the cluster's GPU, the single batch this process's CPU;
    a local output's write tasks are pinned to this node, and reserve no CPU where it has none."""
    result = subprocess.run(
        [sys.executable, "-c", ON_A_REAL_RAY, str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=180,
        env={"RAY_ADDRESS": "", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    gpus, uses_gpu, described = found["unusable"]
    assert gpus == 1 and not uses_gpu
    assert "cannot use them: install a CUDA build of torch" in described
    assert "use_gpu=True, but Ray counts GPUs" in found["required"]
    assert found["gpu_cluster"] == [True, "cuda", "cpu"]
    assert (
        found["pinned"] == WRITE_TASK_CPUS and WRITE_TASK_CPUS < 1
    )  # never the whole CPU: see WRITE_TASK_CPUS
    assert found["no_cpu"] == [0, "NodeAffinitySchedulingStrategy"]


def test_no_filesystem_is_needed_for_the_local_disk(tmp_path):
    assert isinstance(output_location(tmp_path).filesystem, pafs.LocalFileSystem)
