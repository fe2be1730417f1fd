"""The lesson library of the batch inference notebooks, and what their Ray workers import.

The notebooks hold the lesson (the Ray Data calls, the model call, the actor class);
these modules hold the rest, in the order the data flows:

- ``project``: the project's folders: its root, the notebooks, where their outputs go
- ``paths``: file names as text and back (names that are not UTF-8)
- ``sources``: find the images: a local folder, an ``s3://`` URI, or the sample photos
- ``s3``: the ``s3://`` file system, with the environment's endpoint and credentials
- ``cache``: the local copies of datasets that ``make prefetch`` made
- ``decode``: an image file's bytes into an upright RGB image and its original size
- ``preprocess``: resize and crop to uint8 before batching, exactly as the model expects
- ``reading``: the read stage: open, decode and preprocess each file (local or S3), one row
  per file, failures recorded, the first readable batch
- ``cluster``: start or join Ray, size the model actor pool, choose each device's precision
- ``connect``: join an existing cluster, with token authentication and clear errors; what every
  worker gets (environment variables; on a remote cluster, this package)
- ``devices``: whether torch can use the GPUs that Ray counts, asked in a one-GPU Ray task
- ``progress``: live progress bars in notebooks instead of pages of log lines
- ``interrupts``: a cell interrupted and run again: the interrupted run's actors let go
- ``loading``: pretrained weights with clear errors, or seeded offline ones
- ``classifier``: a classifier's categories, normalisation and crop, from torchvision's weights;
  the columns of its predictions
- ``resnet``: ResNet152 for notebook 01, pretrained or offline
- ``vit``: the Hugging Face ViT pipeline of notebook 02, pretrained or a tiny offline one
- ``detection``: Faster R-CNN for notebook 03, and the columns of its row of boxes per image
- ``catalog``: the notebooks, in one list: what each loads (weights, hub models, datasets)
- ``batches``: run a model on the rows that decoded, keep the failed ones; the columns every
  model's rows share
- ``labels``: ImageNet's vocabulary from its data files, and true classes from folder names
- ``evaluate``: accuracy, confusion matrix, single-batch / scaled-up parity
- ``voc``: Pascal VOC annotations and mean average precision
- ``columns``: list columns read back from Parquet (a detector's boxes, labels and scores)
- ``visualize``: image grids, boxes and the confusion matrix
- ``destination``: where results go (local, shared, ``s3://``), checked before the work
- ``results``: read back the predictions Ray wrote, and ``summary.json`` (its fields)
- ``stats``: Ray Data's ``stats()`` report as a table: how busy each stage was
"""

__version__ = "0.1.0"
