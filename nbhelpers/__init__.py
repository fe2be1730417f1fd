"""The lesson library of the batch inference notebooks, and what their Ray workers import.

The notebooks hold the lesson (the Ray Data calls, the model call, the actor class);
these modules hold the rest, in the order the data flows:

- ``sources``: find the images: a local folder, an ``s3://`` URI, or the sample photos
- ``s3``: the ``s3://`` file system, with the environment's endpoint and credentials
- ``cache``: the project's folders, and the local copies of datasets ``make prefetch`` made
- ``decode``: read one file and decode it safely into an upright RGB image
- ``preprocess``: resize and crop to uint8 before batching, exactly as the model expects
- ``reading``: the read stage: one row per file, failures recorded, the first readable batch
- ``cluster``: start or join Ray, and size the model actor pool from what the cluster has
- ``connect``: join an existing cluster, with token authentication and clear errors
- ``progress``: live progress bars in notebooks instead of pages of log lines
- ``models``: ResNet152, pretrained or with seeded offline weights
- ``vit``: the Hugging Face ViT pipeline, pretrained or a tiny offline one
- ``detection``: Faster R-CNN, and one typed row of boxes per image
- ``batches``: run a model on the rows that decoded, keep the failed ones
- ``labels``: true classes from ImageNet-style folder names
- ``evaluate``: accuracy, confusion matrix, single-batch / scaled-up parity
- ``voc``: Pascal VOC annotations and mean average precision
- ``visualize``: image grids, boxes and the confusion matrix
- ``results``: read back the predictions Ray wrote, and ``summary.json``
"""

__version__ = "0.1.0"
