"""The S3 object store: one boto3 client per store, botocore errors turned into project errors.

boto3 is imported only when an :class:`S3Store` is built, so importing this module (and the CLI)
stays cheap. Credentials come from the standard AWS chain; the endpoint is
``settings.s3_endpoint_url`` if set, else whatever boto3 itself resolves (``AWS_ENDPOINT_URL``,
``AWS_ENDPOINT_URL_S3``, the AWS config file, or AWS).
"""

from __future__ import annotations

import builtins
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from script_ec2.errors import (
    AccessDenied,
    BucketNotFound,
    EndpointUnreachable,
    KeyNotFound,
    StoreError,
    UsageError,
)
from script_ec2.settings import Settings, mask_url
from script_ec2.store.interface import ObjectInfo
from script_ec2.store.local import atomic_write, local_error
from script_ec2.store.uri import S3Location, clean_key, clean_prefix, parse_uri

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MiB = 1024 * 1024
DEFAULT_MULTIPART_THRESHOLD = 64 * MiB
# S3 refuses multipart parts under 5 MiB (except the last one).
_MIN_PART_SIZE = 5 * MiB
_DOWNLOAD_CHUNK = 1 * MiB
_CONNECT_TIMEOUT_S = 10
_READ_TIMEOUT_S = 60

_ENDPOINT_HINT = "check --s3-endpoint-url / AWS_ENDPOINT_URL"
_LOCATION_HINT = "check the s3:// location given by --data-uri, --public-uri or --models-dir"
_CREDENTIALS_HINT = (
    "credentials come from the standard AWS chain: AWS_PROFILE, "
    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws/credentials or an instance role"
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "403",
        "Forbidden",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
    }
)


class S3Store:
    """An object store under ``s3://bucket/prefix``; keys are relative to the prefix.

    ``multipart_threshold`` is the file size above which :meth:`upload` uses multipart upload;
    ``page_size`` is the number of keys per ListObjectsV2 page (S3 caps it at 1000).
    """

    def __init__(
        self,
        uri: str,
        settings: Settings,
        *,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        page_size: int = 1000,
    ) -> None:
        location = parse_uri(uri)
        if not isinstance(location, S3Location):
            raise UsageError(f"not an S3 location: {mask_url(uri)!r} (expected s3://BUCKET/PREFIX)")
        self.uri = uri
        self.bucket = location.bucket
        self.prefix = location.prefix
        self.multipart_threshold = multipart_threshold
        self.page_size = page_size
        self._client = _make_client(settings)
        self.endpoint = mask_url(self._client.meta.endpoint_url)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full_prefix = self.prefix + clean_prefix(prefix)
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket,
            Prefix=full_prefix,
            PaginationConfig={"PageSize": self.page_size},
        )
        with self._errors("list", prefix or None):
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(self.prefix) :]
                    # Zero-byte "folder" markers made by consoles are not objects of ours.
                    if key.endswith("/"):
                        continue
                    yield ObjectInfo(
                        key=key,
                        size=obj["Size"],
                        etag=_etag(obj["ETag"]),
                        last_modified=_utc(obj["LastModified"]),
                    )

    def head(self, key: str) -> ObjectInfo:
        full_key = self._key(key)
        with self._errors("head", key):
            try:
                response = self._client.head_object(Bucket=self.bucket, Key=full_key)
            except Exception as exc:
                # HEAD answers a bare 404 for a missing bucket and a missing key alike.
                if _error_code(exc) in _NOT_FOUND_CODES and not self._bucket_exists():
                    raise self._bucket_not_found() from exc
                raise
        return ObjectInfo(
            key=key,
            size=response["ContentLength"],
            etag=_etag(response["ETag"]),
            last_modified=_utc(response["LastModified"]),
        )

    def download(
        self,
        key: str,
        dest: Path,
        *,
        durable: bool = True,
        observe: Callable[[bytes], object] | None = None,
    ) -> ObjectInfo:
        full_key = self._key(key)
        with self._errors("download", key):
            response = self._client.get_object(Bucket=self.bucket, Key=full_key)
            body = response["Body"]
            try:

                def write(append: Callable[[bytes], object]) -> None:
                    for chunk in body.iter_chunks(_DOWNLOAD_CHUNK):
                        append(chunk)

                atomic_write(
                    dest,
                    write,
                    expected_size=response["ContentLength"],
                    durable=durable,
                    observe=observe,
                )
            finally:
                body.close()
        return ObjectInfo(
            key=key,
            size=response["ContentLength"],
            etag=_etag(response["ETag"]),
            last_modified=_utc(response["LastModified"]),
        )

    def upload(self, src: Path, key: str) -> ObjectInfo:
        from boto3.s3.transfer import TransferConfig

        full_key = self._key(key)
        try:
            with src.open("rb"):
                pass
        except OSError as exc:
            raise local_error(exc, src, "read") from exc
        transfer = TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=max(self.multipart_threshold, _MIN_PART_SIZE),
        )
        with self._errors("upload", key):
            self._client.upload_file(str(src), self.bucket, full_key, Config=transfer)
        return self.head(key)

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        full_key = self._key(key)
        with self._errors("put", key):
            self._client.put_object(Bucket=self.bucket, Key=full_key, Body=data)
        # PutObject does not return LastModified; HEAD gives exactly what a listing will show.
        return self.head(key)

    def get_bytes(self, key: str) -> bytes:
        full_key = self._key(key)
        with self._errors("get", key):
            response = self._client.get_object(Bucket=self.bucket, Key=full_key)
            with response["Body"] as body:
                data = body.read()
        if len(data) != response["ContentLength"]:
            raise StoreError(
                f"incomplete read of {self._uri(key)}: got {len(data)} bytes, "
                f"expected {response['ContentLength']} (retry)"
            )
        return data

    def delete(self, key: str) -> None:
        full_key = self._key(key)
        with self._errors("delete", key):
            self._client.delete_object(Bucket=self.bucket, Key=full_key)

    def _key(self, key: str) -> str:
        return self.prefix + clean_key(key)

    def _uri(self, key: str | None) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key or ''}"

    def _bucket_exists(self) -> bool:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            return _error_code(exc) not in ("404", "NoSuchBucket", "NotFound")
        return True

    def _bucket_not_found(self) -> BucketNotFound:
        return BucketNotFound(
            f"bucket {self.bucket!r} not found at endpoint {self.endpoint} ({_LOCATION_HINT})"
        )

    @contextmanager
    def _errors(self, action: str, key: str | None) -> Iterator[None]:
        """Turn boto3/botocore exceptions raised inside the block into project errors."""
        try:
            yield
        except StoreError:
            raise
        except Exception as exc:
            mapped = self._map(exc, action, key)
            if mapped is None:
                raise
            raise mapped from exc

    def _map(self, exc: BaseException, action: str, key: str | None) -> StoreError | None:
        from boto3.exceptions import S3UploadFailedError
        from botocore import exceptions as bx

        if isinstance(exc, S3UploadFailedError) and isinstance(exc.__context__, bx.ClientError):
            exc = exc.__context__
        where = self._uri(key)
        if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
            return AccessDenied(
                f"no usable AWS credentials to {action} {where} ({_CREDENTIALS_HINT})"
            )
        if isinstance(exc, bx.CredentialRetrievalError):
            return AccessDenied(
                f"cannot load AWS credentials to {action} {where}: {_one_line(exc)} "
                f"({_CREDENTIALS_HINT})"
            )
        if isinstance(exc, bx.ReadTimeoutError):
            return EndpointUnreachable(
                f"S3 endpoint {self.endpoint} timed out during {action} of {where} "
                f"after {_READ_TIMEOUT_S}s ({_ENDPOINT_HINT}, or retry)"
            )
        if isinstance(exc, bx.ConnectionError | bx.ConnectionClosedError):
            return EndpointUnreachable(
                f"cannot reach S3 endpoint {self.endpoint}: {_connection_reason(exc)} "
                f"({_ENDPOINT_HINT})"
            )
        if isinstance(exc, bx.ResponseStreamingError | bx.IncompleteReadError):
            return StoreError(
                f"transfer of {where} from {self.endpoint} was cut off: {_one_line(exc)} (retry)"
            )
        if isinstance(exc, bx.ClientError):
            return self._map_client_error(exc, action, key)
        if isinstance(exc, bx.BotoCoreError):
            return StoreError(f"S3 {action} of {where} failed: {_one_line(exc)}")
        if isinstance(exc, OSError):
            # boto3's upload reads the source file itself.
            return StoreError(f"S3 {action} of {where} failed: {_one_line(exc)}")
        return None

    def _map_client_error(self, exc: Any, action: str, key: str | None) -> StoreError:
        code = _error_code(exc)
        where = self._uri(key)
        message = _one_line(exc.response.get("Error", {}).get("Message", "") or code)
        if code == "NoSuchBucket":
            return self._bucket_not_found()
        if code in _NOT_FOUND_CODES and key is not None:
            return KeyNotFound(
                f"object {where} not found at endpoint {self.endpoint} "
                "(check the key; list the store to see what exists)"
            )
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _DENIED_CODES or status == 403:
            return AccessDenied(
                f"access denied to {action} {where} at endpoint {self.endpoint}: {code}: {message} "
                f"(check the bucket policy and credentials; {_CREDENTIALS_HINT})"
            )
        return StoreError(
            f"S3 {action} of {where} failed at endpoint {self.endpoint}: {code}: {message}"
        )


def _make_client(settings: Settings) -> S3Client:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, InvalidRegionError

    endpoint = settings.s3_endpoint_url or None
    options: dict[str, Any] = {
        "connect_timeout": _CONNECT_TIMEOUT_S,
        "read_timeout": _READ_TIMEOUT_S,
        "retries": {"mode": "standard", "total_max_attempts": settings.s3_max_attempts},
    }
    if endpoint or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3"):
        # S3 look-alikes (MinIO, LocalStack, moto) serve buckets by path; virtual-host names
        # such as bucket.localhost do not resolve everywhere.
        options["s3"] = {"addressing_style": "path"}
    try:
        session = boto3.session.Session(region_name=settings.aws_region or None)
        return session.client("s3", endpoint_url=endpoint, config=Config(**options))
    except InvalidRegionError as exc:
        raise UsageError(
            f"invalid AWS region {settings.aws_region!r} (check SCRIPT_EC2_AWS_REGION or "
            "aws_region in the config file, e.g. us-west-1)"
        ) from exc
    except (ValueError, BotoCoreError) as exc:
        # boto3 checks the endpoint when the client is built: "Invalid endpoint: ...".
        shown = mask_url(endpoint or os.environ.get("AWS_ENDPOINT_URL", "") or "default")
        raise UsageError(
            f"cannot set up the S3 client for endpoint {shown!r}: {_one_line(exc)} "
            f"(expected http(s)://HOST[:PORT]; {_ENDPOINT_HINT})"
        ) from exc


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def _connection_reason(exc: BaseException) -> str:
    """The root cause of a connection failure, in a few words."""
    seen: builtins.list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        if isinstance(current, ConnectionRefusedError):
            return "connection refused"
        if isinstance(current, socket.gaierror):
            return "host name not resolved"
        if isinstance(current, TimeoutError):
            return "connection timed out"
        kwargs = getattr(current, "kwargs", None)
        nested = kwargs.get("error") if isinstance(kwargs, dict) else None
        current = nested if isinstance(nested, BaseException) else None
        current = current or seen[-1].__cause__ or seen[-1].__context__
    return _one_line(exc)


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


def _etag(raw: str) -> str:
    return raw.strip('"')


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)
