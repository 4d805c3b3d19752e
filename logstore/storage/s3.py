"""A thin asyncio face over boto3: each call runs in a dedicated thread pool
with connect/read deadlines and botocore's bounded retries, and S3 errors are
translated into the few outcomes the backend cares about."""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from dataclasses import dataclass
from typing import Any, AsyncIterator

import boto3
import botocore.config
import botocore.exceptions

from ..config import Config
from ..errors import StorageError
from ..pem import given_path, read_pem
from ..redact import config_secrets, redact

log = logging.getLogger(__name__)


class PreconditionFailed(Exception):
    """If-None-Match: * found the key already there."""


class NotFound(Exception):
    """The key (or bucket) does not exist."""


@dataclass
class ObjectInfo:
    key: str
    size: int
    modified: float = 0.0  # unix seconds (LastModified), where the listing says


def _code(e: botocore.exceptions.ClientError) -> tuple[str, int]:
    err = e.response.get("Error", {})
    return str(err.get("Code", "")), int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


class S3:
    def __init__(self, config: Config, pool_size: int = 40) -> None:
        scheme = "https" if config["minio.useSSL"] else "http"
        self.endpoint = f"{scheme}://{config['minio.address']}:{config['minio.port']}"
        self._secrets = config_secrets(config)
        # https: verify the endpoint against minio.ssl.tlsCACert (a private CA), else the system CAs.
        # Checked here so a missing or non-PEM file is a ConfigError naming the key, not a
        # botocore error on the first request.
        ca = given_path(config["minio.ssl.tlsCACert"]) if config["minio.useSSL"] else ""
        if ca:
            read_pem(ca, "minio.ssl.tlsCACert")
        self.ca_file = ca
        self.bucket = config["minio.bucketName"]
        timeout = self.timeout = config["minio.requestTimeoutMs"]
        self._pool = concurrent.futures.ThreadPoolExecutor(pool_size, thread_name_prefix="picchio-s3")
        self._client = boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name=config["minio.region"] or "us-east-1",
            aws_access_key_id=config["minio.accessKeyID"], aws_secret_access_key=config["minio.secretAccessKey"],
            verify=ca or None,
            config=botocore.config.Config(
                connect_timeout=min(timeout, 10), read_timeout=timeout, max_pool_connections=pool_size,
                retries={"mode": "standard", "total_max_attempts": 3},
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required", response_checksum_validation="when_required",
            ),
        )

    async def _run(self, what: str, fn, *args: Any, **kw: Any) -> Any:
        """One S3 call, botocore's retries included, within ``minio.requestTimeoutMs``:
        a hung server gives a StorageError after one deadline (the thread left
        behind ends at botocore's own read timeout, the same value)."""
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._pool, lambda: fn(*args, **kw)), self.timeout)
        except asyncio.TimeoutError:
            raise StorageError(f"S3 {what} did not answer within {self.timeout:g}s (minio.requestTimeoutMs) "
                               f"({self.endpoint})") from None
        except botocore.exceptions.ClientError as e:
            code, status = _code(e)
            if code in ("PreconditionFailed", "FileAlreadyExists") or status == 412:
                raise PreconditionFailed(what) from e
            if code in ("NoSuchKey", "NoSuchBucket", "404", "NotFound") or status == 404:
                raise NotFound(what) from e
            hint = ""
            if status == 400 and not self.endpoint.startswith("https") and not code.isalpha():
                hint = " (an https endpoint answers plain http with 400: set minio.useSSL: true?)"
            elif status == 403 or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                hint = " (check minio.accessKeyID/minio.secretAccessKey)"
            raise StorageError(redact(f"S3 {what} failed: {code or status}: {e}{hint}", self._secrets)) from None
        except botocore.exceptions.SSLError as e:
            raise StorageError(redact(f"S3 {what} failed ({self.endpoint}): TLS: {e} (check minio.ssl.tlsCACert: "
                                      f"the CA that signed the endpoint's certificate, currently "
                                      f"{self.ca_file or 'the system CAs'})", self._secrets)) from None
        except (botocore.exceptions.BotoCoreError, OSError) as e:
            raise StorageError(redact(f"S3 {what} failed ({self.endpoint}): {e}", self._secrets)) from None

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    async def ensure_bucket(self, create: bool) -> None:
        try:
            await self._run(f"head bucket {self.bucket}", self._client.head_bucket, Bucket=self.bucket)
        except NotFound:
            if not create:
                raise StorageError(f"bucket {self.bucket!r} does not exist at {self.endpoint} "
                                   "(create it, or set minio.createBucket: true)") from None
            try:
                await self._run(f"create bucket {self.bucket}", self._client.create_bucket, Bucket=self.bucket)
            except StorageError as e:
                if "BucketAlreadyOwnedByYou" not in str(e) and "BucketAlreadyExists" not in str(e):
                    raise

    async def put(self, key: str, body: bytes, *, if_absent: bool = False, metadata: dict[str, str] | None = None) -> None:
        kw: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Body": body}
        if if_absent:
            kw["IfNoneMatch"] = "*"
        if metadata:
            kw["Metadata"] = metadata
        await self._run(f"put {key}", self._client.put_object, **kw)

    async def get(self, key: str, byte_range: tuple[int, int] | None = None) -> tuple[bytes, dict[str, str]]:
        kw: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if byte_range:
            kw["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"

        def call() -> tuple[bytes, dict[str, str]]:
            r = self._client.get_object(**kw)
            with r["Body"] as body:
                return body.read(), {k.lower(): v for k, v in r.get("Metadata", {}).items()}

        return await self._run(f"get {key}", call)

    async def head(self, key: str) -> tuple[int, dict[str, str]]:
        r = await self._run(f"head {key}", self._client.head_object, Bucket=self.bucket, Key=key)
        return int(r["ContentLength"]), {k.lower(): v for k, v in r.get("Metadata", {}).items()}

    async def list(self, prefix: str) -> list[ObjectInfo]:
        def call() -> list[ObjectInfo]:
            out: list[ObjectInfo] = []
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                out += [ObjectInfo(o["Key"], int(o["Size"])) for o in page.get("Contents", [])]
            return out

        return await self._run(f"list {prefix}", call)

    async def list_pages(self, prefix: str) -> AsyncIterator[list[ObjectInfo]]:
        """Every object under ``prefix``, one page (≤ 1,000) at a time, each
        request within its own deadline: a bucket of millions is scanned in
        constant memory."""
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            if token:
                kw["ContinuationToken"] = token
            page = await self._run(f"list {prefix}", self._client.list_objects_v2, **kw)
            yield [ObjectInfo(o["Key"], int(o["Size"]), o["LastModified"].timestamp())
                   for o in page.get("Contents", [])]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    async def list_dirs(self, prefix: str) -> list[str]:
        def call() -> list[str]:
            out: list[str] = []
            for page in self._client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                out += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
            return out

        return await self._run(f"list {prefix}", call)

    async def delete_many(self, keys: list[str], in_flight: int = 4) -> None:
        """DeleteObjects in batches of 1,000 keys (the S3 maximum), ``in_flight``
        at a time; each request has its own deadline."""
        gate = asyncio.Semaphore(in_flight)

        async def one(batch: list[str]) -> None:
            async with gate:
                r = await self._run(f"delete {len(batch)} objects", self._client.delete_objects, Bucket=self.bucket,
                                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
            errors = [e for e in r.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if errors:
                raise StorageError(f"S3 delete failed for {len(errors)} objects, e.g. {errors[0]}")

        await asyncio.gather(*(one(keys[i:i + 1000]) for i in range(0, len(keys), 1000)))
