"""``s3://`` sources: a pyarrow file system with the environment's endpoint and credentials.

Problems come out as :class:`S3SourceError` with a message that says what to check;
:func:`nbhelpers.sources.find_images` passes them on as data source errors.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

import pyarrow.fs as pafs


class S3SourceError(OSError):
    """An ``s3://`` URI that cannot be listed or read; the message says what to check."""


def s3_filesystem(uri: str) -> tuple[pafs.S3FileSystem, str]:
    """A pyarrow S3 filesystem for ``uri`` and the ``bucket/prefix`` path inside it.

    ``s3://anonymous@bucket/prefix`` reads a public bucket without credentials.
    Otherwise credentials come from the standard AWS environment variables (or,
    without them, from the AWS profile or the machine's role). An S3-compatible
    server is reached through ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``. The
    endpoint, region and credentials from the environment are resolved here, in the
    driver, and travel with the filesystem object, so that Ray workers (on this
    machine or others) read from the same place with the same credentials.
    """
    user, _, bucket = uri.split("://", 1)[1].partition("/")[0].rpartition("@")
    key = uri.split("://", 1)[1].partition("/")[2]
    anonymous = user == "anonymous"
    if not bucket:
        raise S3SourceError(
            f"{uri!r} has no bucket name; expected s3://bucket/prefix "
            "(or s3://anonymous@bucket/prefix for a public bucket)."
        )
    path = f"{bucket}/{key.lstrip('/')}".rstrip("/")
    options: dict = {"anonymous": anonymous}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if endpoint:
        endpoint_url = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        options["endpoint_override"] = endpoint_url.netloc
        options["scheme"] = endpoint_url.scheme
        options["region"] = region or "us-east-1"
    elif region:
        options["region"] = region
    else:
        options["region"] = _bucket_region(bucket, uri)
    if not anonymous and os.environ.get("AWS_ACCESS_KEY_ID"):
        options["access_key"] = os.environ["AWS_ACCESS_KEY_ID"]
        options["secret_key"] = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        if os.environ.get("AWS_SESSION_TOKEN"):
            options["session_token"] = os.environ["AWS_SESSION_TOKEN"]
    if os.environ.get("AWS_CA_BUNDLE"):
        options["tls_ca_file_path"] = os.environ["AWS_CA_BUNDLE"]
    options["connect_timeout"] = 10
    options["request_timeout"] = 60
    return pafs.S3FileSystem(**options), path


def _bucket_region(bucket: str, uri: str) -> str:
    try:
        return pafs.resolve_s3_region(bucket)
    except OSError as error:
        raise S3SourceError(
            f"Cannot reach the S3 bucket of {uri!r} ({error}). Without network, run "
            "offline with data_uri='sample' (or a local folder) and pretrained=False, "
            "or copy the images to a local folder first and give its path as data_uri."
        ) from error


def list_objects(uri: str) -> tuple[list[pafs.FileInfo], pafs.S3FileSystem]:
    """Every object below the prefix of ``uri`` (or the one object it names), and the file system."""
    fs, path = s3_filesystem(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    except FileNotFoundError:
        infos = _single_object(fs, path, uri)
    except OSError as error:
        raise S3SourceError(_s3_listing_problem(uri, error)) from error
    return [info for info in infos if info.type == pafs.FileType.File], fs


def _single_object(fs: pafs.S3FileSystem, path: str, uri: str) -> list[pafs.FileInfo]:
    """``uri`` names one object rather than a prefix; raise when it names nothing."""
    try:
        info = fs.get_file_info(path)
    except OSError:
        info = None
    if info is None or info.type != pafs.FileType.File:
        raise S3SourceError(
            f"data_uri {uri!r} does not exist: the bucket has no object and no prefix "
            f"{path.partition('/')[2]!r}. Check the spelling (S3 keys are case-sensitive)."
        )
    return [info]


def _s3_listing_problem(uri: str, error: OSError) -> str:
    """A message for an S3 listing that failed: which bucket, and what to check."""
    text = str(error)
    refused = ("ACCESS_DENIED", "INVALID_ACCESS_KEY", "SIGNATURE", "FORBIDDEN", "EXPIRED")
    if any(marker in text.upper() for marker in refused):
        return (
            f"Access to {uri!r} was refused ({error}). For a public bucket use "
            "s3://anonymous@bucket/prefix; for a private one set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) to credentials that may list it."
        )
    if "NO_SUCH_BUCKET" in text or "bucket does not exist" in text:
        bucket = urlparse(uri).netloc.rpartition("@")[2]
        return f"data_uri {uri!r} does not exist: there is no bucket {bucket!r}."
    return (
        f"Cannot list {uri!r}: {error}. Check the URI, your network and your AWS "
        "credentials; use s3://anonymous@bucket/... for a public bucket, and "
        "AWS_ENDPOINT_URL_S3 for an S3-compatible server. Without network, run offline "
        "with data_uri='sample' and pretrained=False."
    )
