"""``s3://`` sources: a pyarrow file system with the environment's endpoint and credentials."""

from __future__ import annotations

import os
from urllib.parse import urlparse

import pyarrow.fs as pafs


class S3SourceError(OSError):
    """An ``s3://`` URI that cannot be listed or read; the message says what to check."""


def s3_filesystem(uri: str) -> tuple[pafs.S3FileSystem, str]:
    """A pyarrow S3 filesystem for ``uri`` and the ``bucket/prefix`` path inside it.

    ``s3://anonymous@bucket/prefix`` reads a public bucket without credentials. The
    endpoint (``AWS_ENDPOINT_URL_S3``), region and credentials of the environment are
    resolved here, in the driver, and travel with the filesystem object, so that Ray
    workers on any machine read from the same place with the same credentials.
    """
    env = os.environ.get
    location, _, key = uri.split("://", 1)[1].partition("/")
    user, _, bucket = location.rpartition("@")
    if not bucket:
        raise S3SourceError(
            f"{uri!r} has no bucket name; expected s3://bucket/prefix "
            "(or s3://anonymous@bucket/prefix for a public bucket)."
        )
    anonymous = user == "anonymous"
    options: dict = {"anonymous": anonymous, "connect_timeout": 10, "request_timeout": 60}
    endpoint = env("AWS_ENDPOINT_URL_S3") or env("AWS_ENDPOINT_URL")
    region = env("AWS_REGION") or env("AWS_DEFAULT_REGION")
    if endpoint:
        endpoint_url = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        options |= {"endpoint_override": endpoint_url.netloc, "scheme": endpoint_url.scheme}
        region = region or "us-east-1"
    elif not region:
        try:
            region = pafs.resolve_s3_region(bucket)
        except OSError as error:
            raise S3SourceError(
                f"Cannot reach the S3 bucket of {uri!r} ({error}). Without network, run "
                "offline with data_uri='sample' (or a local folder) and pretrained=False, "
                "or copy the images to a local folder first and give its path as data_uri."
            ) from error
    options["region"] = region
    if not anonymous and env("AWS_ACCESS_KEY_ID"):
        options["access_key"] = env("AWS_ACCESS_KEY_ID")
        options["secret_key"] = env("AWS_SECRET_ACCESS_KEY", "")
        if env("AWS_SESSION_TOKEN"):
            options["session_token"] = env("AWS_SESSION_TOKEN")
    if env("AWS_CA_BUNDLE"):
        options["tls_ca_file_path"] = env("AWS_CA_BUNDLE")
    return pafs.S3FileSystem(**options), f"{bucket}/{key.lstrip('/')}".rstrip("/")


def list_objects(uri: str) -> tuple[list[pafs.FileInfo], pafs.S3FileSystem]:
    """Every object below the prefix of ``uri`` (or the one object it names), and the file system."""
    fs, path = s3_filesystem(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    except FileNotFoundError:  # not a prefix: perhaps one object
        try:
            infos = [fs.get_file_info(path)]
        except OSError:
            infos = []
        if not infos or infos[0].type != pafs.FileType.File:
            raise S3SourceError(
                f"data_uri {uri!r} does not exist: the bucket has no object and no prefix "
                f"{path.partition('/')[2]!r}. Check the spelling (S3 keys are case-sensitive)."
            ) from None
    except OSError as error:
        text = str(error)
        refused = ("ACCESS_DENIED", "INVALID_ACCESS_KEY", "SIGNATURE", "FORBIDDEN", "EXPIRED")
        if any(marker in text.upper() for marker in refused):
            text = (
                f"Access to {uri!r} was refused ({error}). For a public bucket use "
                "s3://anonymous@bucket/prefix; for a private one set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) to credentials that may list it."
            )
        elif "NO_SUCH_BUCKET" in text or "bucket does not exist" in text:
            bucket = path.partition("/")[0]
            text = f"data_uri {uri!r} does not exist: there is no bucket {bucket!r}."
        else:
            text = (
                f"Cannot list {uri!r}: {error}. Check the URI, your network and your AWS "
                "credentials; use s3://anonymous@bucket/... for a public bucket, and "
                "AWS_ENDPOINT_URL_S3 for an S3-compatible server. Without network, run "
                "offline with data_uri='sample' and pretrained=False."
            )
        raise S3SourceError(text) from error
    return [info for info in infos if info.type == pafs.FileType.File], fs
