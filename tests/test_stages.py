"""Unit tests of the model, prediction, evaluation and result stages (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from nbhelpers.cluster import ClusterResources, size_actor_pool
from nbhelpers.destination import output_location
from nbhelpers.evaluate import accuracy, compare_classifications, confusion_matrix, parity_summary
from nbhelpers.loading import WeightsUnavailableError, load_pretrained
from nbhelpers.preprocess import CenterCrop
from nbhelpers.reading import prepare_image
from nbhelpers.resnet import build_resnet152
from nbhelpers.results import (
    LostRowsError,
    build_summary,
    check_one_row_per_image,
    read_predictions,
    write_summary,
)
from nbhelpers.sources import choose_num_images, find_images
from nbhelpers.stats import stage_table


@pytest.fixture(scope="module")
def offline_resnet():
    return build_resnet152(pretrained=False)


def test_offline_resnet_is_the_same_in_every_build(offline_resnet):
    again, _ = build_resnet152(pretrained=False)
    first = offline_resnet[0].state_dict()
    assert all(torch.equal(first[k], v) for k, v in again.state_dict().items())


def test_offline_resnet_predictions_are_decisive_and_image_dependent(offline_resnet, sample_photos):
    model, spec = offline_resnet
    images = np.stack([prepare_image(str(p), spec.preprocess, None).image for p in sample_photos])
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    pixels = (pixels - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(
        1, 3, 1, 1
    )
    with torch.inference_mode():
        top = model(pixels).softmax(dim=1).topk(2, dim=1)
    margins = (top.values[:, 0] - top.values[:, 1]).numpy()
    assert len(set(top.indices[:, 0].tolist())) > 1
    assert np.median(margins) > 0.005


def test_pretrained_without_network_or_cache_fails_clearly(no_network):
    from torchvision.models import ResNet152_Weights, resnet152

    with pytest.raises(WeightsUnavailableError, match="pretrained=False"):
        load_pretrained(resnet152, ResNet152_Weights.DEFAULT)


def test_center_crop_gives_fixed_size_uint8():
    from PIL import Image

    crop = CenterCrop(resize_size=232, crop_size=224)
    out = crop(Image.new("RGB", (500, 375), (10, 20, 30)))
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert tuple(out[100, 100]) == (10, 20, 30)


def test_accuracy_and_confusion_matrix():
    categories = ["tench", "goldfish", "shark"]
    true, predicted = [0, 0, 1, None], [0, 2, 1, 1]
    assert accuracy(true, predicted) == pytest.approx(2 / 3)
    assert accuracy([None, None], [0, 1]) is None
    matrix = confusion_matrix(true, predicted, categories)
    assert matrix.loc["tench", "tench"] == 1 and matrix.loc["tench", "(other)"] == 1
    assert matrix.to_numpy().sum() == 3


def test_parity_accepts_near_ties_and_rejects_real_differences():
    single = pd.DataFrame(
        {
            "path": ["a", "b", "c"],
            "label": ["x", "y", "z"],
            "score": [0.5, 0.30, 0.2],
            "margin": [0.2, 0.0001, 0.1],
        }
    )
    scaled = pd.DataFrame(
        {"path": ["c", "b", "a"], "label": ["z", "w", "x"], "score": [0.2, 0.30, 0.5]}
    )
    assert parity_summary(compare_classifications(single, scaled))["ok"]
    scaled.loc[2, "label"] = "q"  # a confident answer that changed
    summary = parity_summary(compare_classifications(single, scaled))
    assert not summary["ok"] and summary["matching"] == 2
    scaled.loc[2, "label"], scaled.loc[0, "score"] = "x", 0.25
    assert not parity_summary(compare_classifications(single, scaled))["ok"]


def test_parity_compares_every_row_of_an_image_listed_twice():
    single = pd.DataFrame({"path": ["a", "b"], "label": ["x", "y"], "score": [0.5, 0.3]})
    single["margin"] = 0.2
    scaled = pd.DataFrame(
        {"path": ["a", "b", "a", "b"], "label": ["x", "y", "x", "y"], "score": [0.5, 0.3, 0.5, 0.3]}
    )
    comparison = compare_classifications(single, scaled)
    assert comparison["path"].tolist() == ["a", "b"] and comparison["match"].all()
    scaled.loc[3, "score"] = 0.1  # b's second row differs
    comparison = compare_classifications(single, scaled)
    assert comparison["match"].tolist() == [True, False]
    assert comparison["score_difference"][1] == pytest.approx(0.2)  # shown by its worse row


def test_lost_rows_are_detected():
    frame = pd.DataFrame({"path": ["a", "a"], "error": [None, None]})
    with pytest.raises(LostRowsError, match="missing"):
        check_one_row_per_image(frame, ["a", "b"])


def test_a_path_listed_twice_needs_two_rows_and_no_more():
    listed = ["a", "b", "a"]  # as the sample lists its photos
    check_one_row_per_image(pd.DataFrame({"path": ["a", "a", "b"]}), listed)
    with pytest.raises(LostRowsError, match=r"missing \['a'\]"):
        check_one_row_per_image(pd.DataFrame({"path": ["a", "b", "b"]}), listed)
    with pytest.raises(LostRowsError, match=r"duplicated \['a'\]"):
        check_one_row_per_image(pd.DataFrame({"path": ["a", "a", "a", "b"]}), listed)


def test_results_are_written_and_counts_add_up(tmp_path):
    predictions = pd.DataFrame(
        {
            "path": ["a", "b", "c"],
            "error": [None, "empty file (0 bytes)", None],
            "label": ["x", None, "y"],
        }
    )
    plan = size_actor_pool(ClusterResources(2, 0))
    summary = build_summary(
        "demo", predictions, 3.0, {"p": 1}, ClusterResources(2, 0), plan, accuracy=None
    )
    assert (summary["num_images_in"], summary["num_predicted"], summary["num_failed"]) == (3, 2, 1)
    assert summary["failures"] == {"empty file (0 bytes)": 1}
    output = output_location(tmp_path / "out")
    written = Path(write_summary(output, summary))
    assert written == tmp_path / "out" / "summary.json"
    assert json.loads(written.read_text())["num_failed"] == 1
    folder = tmp_path / "out" / "predictions"
    folder.mkdir()
    predictions.iloc[::-1].to_parquet(folder / "part-0.parquet", index=False)
    back = read_predictions(output, ["a", "b", "c"])
    assert back["error"].tolist() == [None, "empty file (0 bytes)", None]
    only = read_predictions(output, ["a", "b", "c"], columns=["path"])
    assert list(only.columns) == ["path", "error"]  # path and error always come back
    summary["num_failed"] = 0
    with pytest.raises(LostRowsError):
        write_summary(output_location(tmp_path / "bad"), summary)


def test_choose_num_images():
    assert choose_num_images("auto", use_gpu=True, cpu_default=200)[0] is None
    limit, note = choose_num_images("auto", use_gpu=False, cpu_default=200)
    assert limit == 200 and "num_images=None" in note
    assert choose_num_images(None, use_gpu=False, cpu_default=200)[0] is None
    assert choose_num_images(7, use_gpu=False, cpu_default=200)[0] == 7
    with pytest.raises(ValueError, match="num_images"):
        choose_num_images("lots", use_gpu=False, cpu_default=200)


def test_a_stats_report_without_an_executed_stage_is_refused():
    with pytest.raises(ValueError, match="No stage found"):
        stage_table("Dataset throughput:\n\t* Ray Data throughput: 0 rows/s\n")


def test_find_images_takes_auto_and_says_what_it_chose():
    on_cpu = find_images("sample", "auto", use_gpu=False, cpu_default=5)
    assert len(on_cpu.paths) == 5 and "at most 5 images" in on_cpu.describe()
    on_gpu = find_images("sample", "auto", use_gpu=True)
    assert len(on_gpu.paths) == on_gpu.num_found * on_gpu.repeats
    assert find_images("sample", 3).note == ""  # a number asked for needs no sentence


@pytest.mark.parametrize(
    "actors, paths, batch, tasks",
    [(1, 48, 16, 3), (1, 5, 16, 1), (4, 48, 16, 8), (2, 1000, 64, 16)],
)
def test_read_tasks_hold_one_batch_or_two_per_actor_on_small_data(actors, paths, batch, tasks):
    plan = size_actor_pool(ClusterResources(cpus=8, gpus=0), num_actors=actors)
    assert plan.read_tasks(paths, batch) == tasks


def test_read_tasks_feeding_a_gpu_hold_whole_batches_of_at_least_64_rows():
    plan = size_actor_pool(ClusterResources(cpus=2, gpus=1))
    assert plan.read_tasks(2000, 16) == 32 and plan.read_tasks(2000, 64) == 32
    assert plan.read_tasks(40, 16) == 1  # one actor: a small dataset in one task


def test_output_location_defaults_to_the_notebooks_folder(tmp_path, monkeypatch):
    from nbhelpers import destination

    monkeypatch.setattr(destination, "OUTPUT_ROOT", tmp_path)
    output = destination.output_location(None, "01_resnet_classification")
    assert output.path == str(tmp_path / "01_resnet_classification")


def test_check_parity_prints_its_tolerance_and_fails_a_real_difference(capsys):
    from nbhelpers.evaluate import check_parity

    single = pd.DataFrame(
        {"path": ["a", "b"], "label": ["cat", "dog"], "score": [0.9, 0.6], "margin": [0.5, 0.3]}
    )
    scaled = pd.DataFrame({"path": ["a", "b"], "label": ["cat", "dog"], "score": [0.9, 0.6]})
    comparison, parity = check_parity(single, scaled, "cpu", "cpu")
    assert parity == {"checked": 2, "matching": 2, "ok": True}
    assert "within 0.001" in capsys.readouterr().out
    scaled.loc[1, "label"] = "cow"
    assert not check_parity(single, scaled, "cpu", "cuda")[1]["ok"]
