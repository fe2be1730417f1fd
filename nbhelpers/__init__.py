"""Shared helpers for the batch image inference notebooks.

The modules follow the way the data flows:

- ``sources``: find the images (local folder, ``s3://``, or the bundled sample photos)
- ``decode``: read and decode one file safely into an RGB image
- ``preprocess``: resize and crop to fixed-size uint8 before batching
- ``cluster``: start or join Ray and size the model actor pool
- ``models``: build the models, pretrained or offline
- ``predict``: run a model on a batch (the same code in the single batch and on Ray)
- ``pipeline``: the Ray Data dataset that reads, decodes and preprocesses
- ``labels``: class labels from paths (ImageNet synset folders)
- ``evaluate``: accuracy, confusion matrix, parity checks
- ``visualize``: image grids, confusion matrix plots
- ``results``: Parquet and ``summary.json``
"""

__version__ = "0.1.0"
