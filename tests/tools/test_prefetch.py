"""``make prefetch``: datasets copied from a real (local) S3 server, weights found in the caches.

The datasets are served by moto's S3 server under the real bucket names, so the
default ``data_uri`` of the notebooks resolves to the prefetched copy. The
pretrained-weights part uses seeded random weights saved under the file name that
torchvision expects, in a temporary ``TORCH_HOME``: the notebook then runs with
``pretrained=True`` and its default ``data_uri``, with nothing to download.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import pytest

from nbhelpers import lessons
from nbhelpers.lessons import (
    CACHE_ENV,
    IMAGENETTE_VAL_URI,
    VOC_ANIMALS_URI,
    local_copy_of,
    local_copy_path,
    marker_path,
)
from nbhelpers.sources import find_images
from tests.conftest import S3Server, jpeg_bytes
from tools import prefetch

SYNSETS = ("n01440764", "n02102040", "n03000684")
VOC_XML = b"""<annotation><filename>{name}.jpg</filename>
<size><width>320</width><height>240</height><depth>3</depth></size>
<object><name>cat</name><difficult>0</difficult>
<bndbox><xmin>10</xmin><ymin>20</ymin><xmax>200</xmax><ymax>220</ymax></bndbox></object>
</annotation>"""


def _key(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.hostname, parsed.path.strip("/")


def _jpeg(photo: Path) -> bytes:
    return jpeg_bytes(photo, longest_side=256, quality=85)


@pytest.fixture(scope="module")
def datasets_on_s3(sample_photos):
    """The two default datasets, small, on a local S3 server under their real bucket names."""
    server = S3Server(require_credentials=False).start()
    try:
        bucket, prefix = _key(IMAGENETTE_VAL_URI)
        files = {
            f"{prefix}/{SYNSETS[i % 3]}/{SYNSETS[i % 3]}_{i}.JPEG": _jpeg(photo)
            for i, photo in enumerate(sample_photos[:6])
        }
        server.upload(bucket, files | {f"{prefix}/LICENSE.txt": b"not an image"}, public=True)
        bucket, prefix = _key(VOC_ANIMALS_URI)
        parent = prefix.rsplit("/", 1)[0]
        files = {f"{prefix}/2007_{i:06d}.jpg": _jpeg(sample_photos[i]) for i in range(3)}
        files |= {  # annotations for two of the three images
            f"{parent}/Annotations/2007_{i:06d}.xml": VOC_XML.replace(
                b"{name}", f"2007_{i:06d}".encode()
            )
            for i in range(2)
        }
        server.upload(bucket, files, public=True)
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(datasets_on_s3, monkeypatch, tmp_path):
    """Point this process at the local S3 server and an empty project cache."""
    for name, value in datasets_on_s3.env(credentials=False).items():
        if value:
            monkeypatch.setenv(name, value)
        else:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_prefetch_copies_voc_images_with_their_annotations(s3_env):
    copied = prefetch.prefetch_dataset(VOC_ANIMALS_URI, progress=False)
    assert (copied.num_images, copied.num_annotations, copied.num_downloaded) == (3, 2, 5)
    assert copied.folder == s3_env / "datasets" / "air-example-data/AnimalDetection/JPEGImages"
    annotations = sorted(p.name for p in (copied.folder.parent / "Annotations").iterdir())
    assert annotations == ["2007_000000.xml", "2007_000001.xml"]
    marker = json.loads(marker_path(copied.folder).read_text())
    assert marker["uri"] == VOC_ANIMALS_URI and marker["num_images"] == 3

    source = find_images(VOC_ANIMALS_URI)
    assert source.filesystem is None  # read from disk, not from S3
    assert all(path.startswith(str(copied.folder)) for path in source.paths)
    assert "make prefetch" in source.describe() and len(source.paths) == 3

    again = prefetch.prefetch_dataset(VOC_ANIMALS_URI, progress=False)
    assert again.num_downloaded == 0  # already there: nothing fetched twice


def test_prefetch_a_subset_keeps_every_class(s3_env):
    copied = prefetch.prefetch_dataset(IMAGENETTE_VAL_URI, num_images=3, progress=False)
    images = sorted(copied.folder.rglob("*.JPEG"))
    assert len(images) == 3 and {p.parent.name for p in images} == set(SYNSETS)
    assert not list(copied.folder.rglob("*.txt"))  # only images are copied
    assert find_images(IMAGENETTE_VAL_URI).num_found == 3


def test_an_unfinished_copy_is_not_used(s3_env):
    folder = local_copy_path(IMAGENETTE_VAL_URI)
    (folder / SYNSETS[0]).mkdir(parents=True)
    (folder / SYNSETS[0] / "half.JPEG").write_bytes(b"")
    assert local_copy_of(IMAGENETTE_VAL_URI) is None  # no marker: listed from S3
    assert find_images(IMAGENETTE_VAL_URI).filesystem is not None


def test_prefetch_command_reports_what_failed(s3_env, capsys):
    status = prefetch.main(["--skip-weights", "--dataset", "s3://anonymous@no-such-bucket/x/"])
    assert status == 1
    assert "no-such-bucket" in capsys.readouterr().err


def save_seeded_resnets(torch_home: Path) -> None:
    """Seeded random ResNet152 (and exercise 3's ResNet18) weights where torchvision downloads them."""
    import torch
    from torchvision.models import ResNet18_Weights, ResNet152_Weights, resnet18, resnet152

    from nbhelpers.models import offline_resnet

    for weights, builder in ((ResNet152_Weights, resnet152), (ResNet18_Weights, resnet18)):
        path = torch_home / "hub" / "checkpoints" / Path(weights.DEFAULT.url).name
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(offline_resnet(builder).state_dict(), path)


@pytest.mark.notebook
@pytest.mark.long
def test_pretrained_defaults_run_offline_after_prefetch(
    s3_env, datasets_on_s3, run_notebook, tmp_path, monkeypatch
):
    prefetch.prefetch_dataset(IMAGENETTE_VAL_URI, progress=False)
    torch_home = tmp_path / "torch"
    save_seeded_resnets(torch_home)
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    assert prefetch.weights_are_cached(lessons.torchvision_weights()[0])
    datasets_on_s3.stop()  # from here on, no S3 at all

    # Default data_uri (the S3 Imagenette URI) and pretrained=True; only the output moves.
    run = run_notebook(
        "01_resnet_classification",
        tmp_path / "out",
        env={
            "TORCH_HOME": str(torch_home),
            CACHE_ENV: str(s3_env),
            "HF_HUB_OFFLINE": "1",
            "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9",  # a dead port: S3 is unreachable
        },
    )
    summary = run.summary
    assert summary["parameters"]["pretrained"] is True
    assert summary["parameters"]["data_uri"] == IMAGENETTE_VAL_URI
    assert summary["num_images_in"] == summary["num_predicted"] == 6
    assert run.predictions["path"].str.startswith(str(s3_env)).all()
    assert summary["accuracy"] is not None  # the synset folders survive the copy
