"""What the lessons say torch and torchvision do, checked by running the installed versions.

When an upgrade changes one of these behaviours, the test fails and the sentence must change
with it.
"""

from __future__ import annotations

import torch


def test_autocast_runs_convolutions_in_bfloat16():
    # Notebooks 01 and 04: under autocast(bfloat16) the network's convolutions compute in
    # bfloat16 (CPU autocast here, as on a GPU).
    convolution = torch.nn.Conv2d(3, 4, 3)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert convolution(torch.rand(1, 3, 8, 8)).dtype == torch.bfloat16
    assert convolution(torch.rand(1, 3, 8, 8)).dtype == torch.float32  # outside: float32


def test_bfloat16_would_move_box_corners_by_pixels():
    """Why notebook 03 keeps the heads in float32: bfloat16 rounds a box corner at 613.7 px
    to 612 (8 bits of mantissa: steps of 4 px from 512 to 1024)."""
    corners = torch.tensor([613.7, 402.2, 1187.4, 799.6])
    assert corners.bfloat16().tolist() == [612.0, 402.0, 1184.0, 800.0]


def test_anchors_follow_the_features_dtype_so_float32_features_keep_boxes_exact():
    """Faster R-CNN makes its anchors in the dtype of the features: bfloat16 features round
    the anchors at 800 px by pixels; on float32 features they are exact."""
    from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2
    from torchvision.models.detection.image_list import ImageList

    generator = fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None).rpn.anchor_generator
    images = ImageList(torch.zeros(1, 3, 800, 1088), [(800, 1066)])
    features = [torch.zeros(1, 256, 800 // s, 1088 // s) for s in (4, 8, 16, 32, 64)]
    exact = generator(images, features)[0]
    rounded = generator(images, [f.bfloat16() for f in features])[0]
    assert exact.dtype == torch.float32 and rounded.dtype == torch.bfloat16
    assert (rounded.float() - exact).abs().max() >= 2  # whole pixels off
