"""The helpers of the batch inference notebooks, and what their Ray workers import.

The notebooks hold the lesson: the read function, the model call, the actor class and the Ray
Data calls. These modules hold the rest, in the order the data flows; each imports only
modules above it in this list:

- ``lessons``: the notebooks as plain data (what each loads and reads), the project's folders
- ``sources``: find the images: a local folder, ``s3://`` (or its prefetched copy), the samples
- ``decode``: a file's bytes into an upright RGB image, every failure a short reason
- ``reading``: the read stage's parts: open a file safely, resize to what the model expects,
  and what to say when nothing reads
- ``models``: ResNet152 and Faster R-CNN, pretrained or seeded offline; ImageNet's vocabulary
- ``vit``: notebook 02's Hugging Face ViT, pretrained or a tiny offline one
- ``rows``: the columns the model stage writes, and list cells read back from Parquet
- ``pool``: size the pool of model actors from the cluster's CPUs and GPUs
- ``runtime``: start or join Ray; every piece that depends on a Ray or ipykernel version
- ``destination``: where results go (local, shared, ``s3://``), checked before any work
- ``results``: the predictions read back, and ``summary.json``
- ``evaluate``: accuracy, confusion matrix, VOC mean average precision, parity
- ``visualize``: image grids, boxes, the confusion matrix, rates
"""

__version__ = "0.1.0"
