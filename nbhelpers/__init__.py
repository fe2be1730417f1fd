"""The lesson library of the batch inference notebooks, and what their Ray workers import.

The notebooks hold the lesson (the Ray Data calls, the model call, the actor class);
these modules hold the rest, in the order the data flows:

- ``paths``: file names as text and back (names that are not UTF-8)
- ``sources``: find the images: a local folder, an ``s3://`` URI, or the sample photos
- ``s3``: the ``s3://`` file system, with the environment's endpoint and credentials
- ``cache``: the project's folders, and the local copies of datasets ``make prefetch`` made
- ``decode``: read one file and decode it safely into an upright RGB image
- ``preprocess``: resize and crop to uint8 before batching, exactly as the model expects
- ``columns``: object arrays for Ray batches, list cells read back from Parquet
- ``reading``: the read stage: one row per file, failures recorded, the first readable batch
- ``cluster``: start or join Ray, size the model actor pool, choose each device's precision
- ``connect``: join an existing cluster, with token authentication and clear errors
- ``progress``: live progress bars in notebooks instead of pages of log lines
- ``loading``: pretrained weights with clear errors, or seeded offline ones
- ``resnet``: ResNet152 for notebook 01, and what a classifier needs around it
- ``vit``: the Hugging Face ViT pipeline of notebook 02, pretrained or a tiny offline one
- ``detection``: Faster R-CNN for notebook 03, and one typed row of boxes per image
- ``catalog``: what each notebook loads (weights, hub models, datasets), in one list
- ``batches``: run a model on the rows that decoded, keep the failed ones
- ``labels``: ImageNet's vocabulary, and true classes from ImageNet-style folder names
- ``evaluate``: accuracy, confusion matrix, single-batch / scaled-up parity
- ``voc``: Pascal VOC annotations and mean average precision
- ``visualize``: image grids, boxes and the confusion matrix
- ``destination``: where results go (local, shared, ``s3://``), checked before the work
- ``results``: read back the predictions Ray wrote, and ``summary.json`` (its fields)
"""

__version__ = "0.1.0"
