"""Shared fixtures: executing notebooks with papermill, and generated image folders.

Each test carries the marker of its folder (``unit``, ``tools``, ``notebooks``, ``claims``,
``system``): ``pytest -m claims`` runs what the lessons say about the installed libraries.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from tools import papermill_runner

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
FOLDER_MARKERS = ("unit", "tools", "notebooks", "claims", "system")
NOTEBOOK_TIMEOUT_S = int(os.environ.get("NOTEBOOK_TIMEOUT_S", "420"))
# Imagenette's ten synset folders and their ImageNet-1k class indices: tench, English springer,
# cassette player, chain saw, church, French horn, garbage truck, gas pump, golf ball, parachute.
IMAGENETTE_SYNSETS = {
    "n01440764": 0,
    "n02102040": 217,
    "n02979186": 482,
    "n03000684": 491,
    "n03028079": 497,
    "n03394916": 566,
    "n03417042": 569,
    "n03425413": 571,
    "n03445777": 574,
    "n03888257": 701,
}


def pytest_collection_modifyitems(config, items):
    """Mark every test with its folder's name (``tests/unit/...``: ``unit``)."""
    for item in items:
        parts = Path(item.path).resolve().relative_to(TESTS).parts
        if len(parts) > 1 and parts[0] in FOLDER_MARKERS:
            item.add_marker(parts[0])


class NotebookRun:
    """What one papermill execution left behind (read from a local folder)."""

    def __init__(self, output_dir: Path, executed: Path):
        self.output_dir = output_dir
        self.executed = executed
        self.summary = json.loads((output_dir / "summary.json").read_text())
        folder = output_dir / "predictions"  # written by Ray Data's write_parquet
        self.predictions = pd.read_parquet(
            folder if folder.is_dir() else output_dir / "predictions.parquet"
        )


def execute_notebook(
    name: str, folder: Path, env: dict | None = None, exercises: bool = False, **parameters
) -> NotebookRun:
    """Run ``notebooks/<name>.ipynb`` with :func:`tools.papermill_runner.execute_notebook`,
    its executed copy and (unless the ``output_dir`` parameter says otherwise) its results
    in ``folder``.

    A local Ray instance of its own (``RAY_ADDRESS`` unset unless ``env`` sets it);
    an empty value in ``env`` removes that variable. The test fails with papermill's
    output when a cell fails or the run passes ``NOTEBOOK_TIMEOUT_S``. The results are
    read from the ``output_dir`` parameter when given (an ``s3://`` one is downloaded
    with boto3 into ``folder/from-s3``), else from ``folder``. ``exercises=False`` leaves the
    solution cells out: each notebook's exercises run in one test (nbmake's for notebook 01).
    """
    run = papermill_runner.execute_notebook(
        name,
        folder,
        parameters,
        timeout_s=NOTEBOOK_TIMEOUT_S,
        env={"RAY_ADDRESS": ""} | (env or {}),
        executed=folder / f"{name}.executed.ipynb",
        skip_solutions=not exercises,
    )
    if run.error:
        raise AssertionError(f"{name} {run.error}:\n{run.output[-9000:]}")
    results = str(parameters.get("output_dir", folder))
    if results.startswith("s3://"):
        return NotebookRun(download_s3_prefix(results, env or {}, folder / "from-s3"), run.executed)
    return NotebookRun(Path(results), run.executed)


def execute_with_nbmake(name: str, folder: Path, **parameters) -> NotebookRun:
    """Run ``notebooks/<name>.ipynb`` the way ``pytest --nbmake`` users do, offline.

    ``papermill --prepare-only`` writes a copy with ``parameters`` (and the ``python3``
    kernel of this environment) into ``folder``; ``pytest --nbmake --overwrite`` then
    executes that copy in a pytest of its own, under an outer time limit, and keeps its
    outputs. The results are read from ``folder`` (the ``output_dir``).
    """
    import papermill

    prepared = folder / f"{name}.nbmake.ipynb"
    papermill.execute_notebook(
        ROOT / "notebooks" / f"{name}.ipynb",
        prepared,
        parameters={"output_dir": str(folder)} | parameters,
        prepare_only=True,
        kernel_name="python3",
        progress_bar=False,
    )
    command = [sys.executable, "-m", "pytest", "--nbmake", "--overwrite", "-q", str(prepared)]
    command += ["-p", "no:cacheprovider", f"--nbmake-timeout={NOTEBOOK_TIMEOUT_S}"]
    run_to_the_end(command, folder, f"pytest --nbmake {prepared.name}")
    return NotebookRun(folder, prepared)


def run_to_the_end(command: list[str], cwd: Path, what: str) -> str:
    """Run ``command`` with a local Ray of its own, under the notebooks' outer time limit;
    the test fails, with the end of what it printed, unless it exits with status 0."""
    env = papermill_runner.environment({"RAY_ADDRESS": ""})
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        output, _ = process.communicate(timeout=NOTEBOOK_TIMEOUT_S + 60)
    except subprocess.TimeoutExpired:
        papermill_runner.stop_process_tree(process.pid)
        process.communicate()
        raise AssertionError(f"{what} did not finish") from None
    assert process.returncode == 0, f"{what} failed:\n{output[-9000:]}"
    return output


def download_s3_prefix(uri: str, env: dict[str, str], target: Path) -> Path:
    """Copy every object under ``s3://bucket/prefix`` into ``target`` with boto3, using the
    endpoint and credentials in ``env`` (as a notebook run got them); returns ``target``."""
    import boto3

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    s3 = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL_S3"],
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    prefix = prefix.strip("/") + "/"
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    for item in listing:
        if item["Key"].endswith("/"):  # a folder marker, which S3 file systems create
            continue
        local = target / item["Key"].removeprefix(prefix)
        local.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, item["Key"], str(local))
    return target


def run_smoke_job(only: str, output_root: Path, **parameters) -> Path:
    """Run ``python -m tools.run_notebooks --smoke`` (what ``make smoke`` runs) for one notebook.

    Without the exercises' solutions. Returns ``output_root``, which then holds the run's report (``index.md``, ``index.html``)
    and a folder per notebook.
    """
    command = [sys.executable, "-m", "tools.run_notebooks", "--smoke", "--only", only]
    command += ["--output-root", str(output_root), "--timeout", str(NOTEBOOK_TIMEOUT_S)]
    command += ["--skip-solutions"]  # the exercises run in a test of their own
    for key, value in parameters.items():
        command += ["-p", key, str(value)]
    run_to_the_end(command, ROOT, f"the smoke job for {only}")
    return output_root


@pytest.fixture(scope="session")
def run_notebook():
    """The :func:`execute_notebook` function, for tests that run notebooks."""
    return execute_notebook


@pytest.fixture(scope="session")
def sample_photos() -> list[Path]:
    """The real photos bundled with scikit-image and matplotlib."""
    from nbhelpers.sources import sample_photo_paths

    return [Path(p) for p in sample_photo_paths()]


@pytest.fixture(scope="session")
def imagenette_folder(tmp_path_factory, sample_photos) -> Path:
    """A small labelled folder in Imagenette's layout: ``<synset>/<name>.JPEG``."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imagenette") / "val"
    synsets = list(IMAGENETTE_SYNSETS)
    for i, photo in enumerate(sample_photos[:8]):
        folder = root / synsets[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        Image.open(photo).convert("RGB").save(folder / f"{synsets[i % 3]}_{i:05d}.JPEG", quality=90)
    return root


def copy_tree(source: Path, target: Path) -> Path:
    """Copy a generated folder (tests that change it keep the shared fixture intact)."""
    shutil.copytree(source, target)
    return target


# --- A real S3-compatible server (moto) on 127.0.0.1, started and stopped by the tests ---


class S3Server:
    """moto's S3 server in its own process on a free local port.

    With ``require_credentials`` every request after the set-up needs the access key
    that :meth:`start` created (moto checks signatures once IAM users exist); without
    it, the server answers anonymous requests like a public bucket does, and still
    refuses anonymous reads of objects that are not ``public-read``.
    """

    SETUP_REQUESTS = 3  # create the user, its policy and its access key without credentials

    def __init__(self, require_credentials: bool):
        self.require_credentials = require_credentials
        self.process: subprocess.Popen | None = None
        self.endpoint = ""
        self.access_key = "unused-access-key"
        self.secret_key = "unused-secret-key"

    def start(self) -> S3Server:
        """Start the server, wait until it answers, and create the credentials."""
        import socket
        import time

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = os.environ | {"MOTO_ALLOW_NONEXISTENT_REGION": "true"}
        if self.require_credentials:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(self.SETUP_REQUESTS)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.1)
        if self.require_credentials:
            self._create_credentials()
        return self

    def _create_credentials(self) -> None:
        iam = self.client("iam")
        iam.create_user(UserName="reader")
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        iam.put_user_policy(UserName="reader", PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]

    def client(
        self, service: str = "s3", access_key: str | None = None, secret_key: str | None = None
    ):
        """A boto3 client for this server (with this server's credentials by default)."""
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
        )

    def env(self, credentials: bool = True) -> dict[str, str]:
        """Environment variables that point AWS clients (and pyarrow) at this server.

        Empty values remove a variable in :func:`execute_notebook`.
        """
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ENDPOINT_URL": "",
            "AWS_ACCESS_KEY_ID": self.access_key if credentials else "",
            "AWS_SECRET_ACCESS_KEY": self.secret_key if credentials else "",
            "AWS_SESSION_TOKEN": "",
            "AWS_PROFILE": "",
            "AWS_REGION": "us-east-1",
        }

    def upload(self, bucket: str, files: dict[str, bytes], public: bool = False) -> None:
        """Create ``bucket`` and put ``files`` (key -> bytes) into it."""
        s3 = self.client()
        s3.create_bucket(Bucket=bucket, **({"ACL": "public-read"} if public else {}))
        for key, body in files.items():
            extra = {"ACL": "public-read"} if public else {}
            s3.put_object(Bucket=bucket, Key=key, Body=body, **extra)

    def stop(self) -> None:
        """Stop the server process."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def jpeg_bytes(photo: Path, longest_side: int = 320, quality: int = 90) -> bytes:
    """``photo`` shrunk to ``longest_side`` and encoded as JPEG."""
    import io

    from PIL import Image

    image = Image.open(photo).convert("RGB")
    image.thumbnail((longest_side, longest_side))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


PUBLIC_URI = "s3://anonymous@public-photos/imagenette/val"  # s3_photo_files in public_s3
PRIVATE_URI = "s3://team-photos/imagenette/val/"  # the same files in private_s3
IMAGE_KEYS = 5  # four photos and one empty file; README.txt is skipped


def s3_photo_files(sample_photos: list[Path]) -> dict[str, bytes]:
    """A small labelled set in Imagenette's layout, with odd key names and one empty file.

    Four photos (shrunk to keep the runs short) under synset prefixes, one empty
    ``.jpg`` (a failed row) and one text file (skipped: not an image by name).
    """

    return {
        "imagenette/val/n01440764/tench one.JPEG": jpeg_bytes(sample_photos[0]),
        "imagenette/val/n01440764/n01440764_2.jpg": jpeg_bytes(sample_photos[2]),
        "imagenette/val/n03445777/golf ball #2 ü.jpeg": jpeg_bytes(sample_photos[3]),
        "imagenette/val/n03888257/nested/parachute.png": jpeg_bytes(sample_photos[6]),
        "imagenette/val/n03888257/empty.jpg": b"",
        "imagenette/val/README.txt": b"Four photos, one empty file and this note.",
    }


@pytest.fixture(scope="session")
def public_s3(sample_photos):
    """A public-read bucket ``public-photos`` on a local S3 server without credentials."""
    server = S3Server(require_credentials=False).start()
    try:
        server.upload("public-photos", s3_photo_files(sample_photos), public=True)
        server.upload("private-photos", s3_photo_files(sample_photos), public=False)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def private_s3(sample_photos):
    """A private bucket ``team-photos`` on a local S3 server that checks credentials."""
    server = S3Server(require_credentials=True).start()
    try:
        server.upload("team-photos", s3_photo_files(sample_photos))
        yield server
    finally:
        server.stop()


@pytest.fixture()
def private_env(private_s3, monkeypatch):
    """The process environment of a user with credentials, pointed at the private server."""
    for key, value in private_s3.env().items():
        monkeypatch.setenv(key, value) if value else monkeypatch.delenv(key, raising=False)
    return private_s3


@pytest.fixture()
def no_network(tmp_path, monkeypatch):
    """torch's weight downloads fail as without network, and its cache is empty."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def unreachable(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)


def run_into_bucket(
    name: str, folder: Path, server: S3Server, uri: str, **parameters
) -> NotebookRun:
    """Run notebook ``name`` with its ``output_dir`` in a bucket of ``server``; checks that the
    bucket holds the Parquet files and ``summary.json``, and returns the run read from there."""
    run = execute_notebook(name, folder, env=server.env(), output_dir=uri, **parameters)
    assert run.output_dir.name == "from-s3"  # downloaded from the bucket, not a local folder
    assert (run.output_dir / "summary.json").is_file()
    assert list((run.output_dir / "predictions").glob("*.parquet"))
    assert run.summary["parameters"]["output_dir"] == uri
    assert f"Results go to {uri}" in run.executed.read_text()
    return run


ERROR_LINE = re.compile(r"\] E \d|\bERROR\b|\d E \d|core_worker\.cc|Traceback")
NO_FREE_CPU = "does not have any available CPUs"
RAY_TEARDOWN_RACE = "KillActor RPC failed"
"""Ray's GCS logs this when it stops a pool's actor whose worker already exited: a race in
Ray's own shutdown after the work is done, seen now and then on a busy 2-core machine."""


def check_quiet(executed: Path) -> None:
    """No cell prints more than 5 lines to stderr (Ray Data's INFO lines aside), no error line,
    and no warning that the job "will hang" for want of CPUs (a false alarm here, or a deadlock)."""
    import nbformat

    for cell in nbformat.read(executed, as_version=4).cells:
        stderr = [
            line
            for output in cell.get("outputs", [])
            if output.get("output_type") == "stream" and output.get("name") == "stderr"
            for line in output.get("text", "").splitlines()
            if line.strip() and " INFO " not in line and RAY_TEARDOWN_RACE not in line
        ]
        assert len(stderr) <= 5, (cell.source[:80], stderr)
        assert not any(ERROR_LINE.search(line) for line in stderr), stderr
        assert not any(NO_FREE_CPU in line for line in stderr), (cell.source[:80], stderr)


FIGURE_LIMIT_BYTES = 150_000
NOTEBOOK_LIMIT_BYTES = 1_000_000


def check_small_figures(executed: Path) -> int:
    """Every figure of an executed notebook under 150 KB and the notebook under 1 MB, as a
    learner opens it; returns how many figures it holds."""
    import base64

    import nbformat

    figures = 0
    for cell in nbformat.read(executed, as_version=4).cells:
        for output in cell.get("outputs", []):
            for kind, data in output.get("data", {}).items():
                if kind.startswith("image/"):
                    figures += 1
                    size = len(base64.b64decode(data))
                    assert size < FIGURE_LIMIT_BYTES, (cell.source[:80], kind, size)
    assert executed.stat().st_size < NOTEBOOK_LIMIT_BYTES, executed.stat().st_size
    return figures
