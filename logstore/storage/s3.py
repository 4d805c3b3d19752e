"""A thin asyncio face over boto3: each call runs in a dedicated thread pool
with connect/read deadlines and botocore's bounded retries, and S3 errors are
translated into the few outcomes the backend cares about."""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from ..config import Config
from ..errors import StorageError

log = logging.getLogger(__name__)


class PreconditionFailed(Exception):
    """If-None-Match: * found the key already there."""


class NotFound(Exception):
    """The key (or bucket) does not exist."""


@dataclass
class ObjectInfo:
    key: str
    size: int


def _code(e: botocore.exceptions.ClientError) -> tuple[str, int]:
    err = e.response.get("Error", {})
    return str(err.get("Code", "")), int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


class S3:
    def __init__(self, config: Config, pool_size: int = 40) -> None:
        scheme = "https" if config["minio.useSSL"] else "http"
        self.endpoint = f"{scheme}://{config['minio.address']}:{config['minio.port']}"
        self.bucket = config["minio.bucketName"]
        timeout = self.timeout = config["minio.requestTimeout"]
        self._pool = concurrent.futures.ThreadPoolExecutor(pool_size, thread_name_prefix="picchio-s3")
        self._client = boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name=config["minio.region"] or "us-east-1",
            aws_access_key_id=config["minio.accessKeyID"], aws_secret_access_key=config["minio.secretAccessKey"],
            config=botocore.config.Config(
                connect_timeout=min(timeout, 10), read_timeout=timeout, max_pool_connections=pool_size,
                retries={"mode": "standard", "total_max_attempts": 3},
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required", response_checksum_validation="when_required",
            ),
        )

    async def _run(self, what: str, fn, *args: Any, **kw: Any) -> Any:
        """One S3 call, botocore's retries included, within ``minio.requestTimeout``:
        a hung server gives a StorageError after one deadline (the thread left
        behind ends at botocore's own read timeout, the same value)."""
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._pool, lambda: fn(*args, **kw)), self.timeout)
        except asyncio.TimeoutError:
            raise StorageError(f"S3 {what} did not answer within {self.timeout:g}s (minio.requestTimeout) "
                               f"({self.endpoint})") from None
        except botocore.exceptions.ClientError as e:
            code, status = _code(e)
            if code in ("PreconditionFailed", "FileAlreadyExists") or status == 412:
                raise PreconditionFailed(what) from e
            if code in ("NoSuchKey", "NoSuchBucket", "404", "NotFound") or status == 404:
                raise NotFound(what) from e
            raise StorageError(f"S3 {what} failed: {code or status}: {e}") from e
        except (botocore.exceptions.BotoCoreError, OSError) as e:
            raise StorageError(f"S3 {what} failed ({self.endpoint}): {e}") from e

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

    async def list_dirs(self, prefix: str) -> list[str]:
        def call() -> list[str]:
            out: list[str] = []
            for page in self._client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                out += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
            return out

        return await self._run(f"list {prefix}", call)

    async def delete_many(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            batch = keys[i:i + 1000]
            r = await self._run(f"delete {len(batch)} objects", self._client.delete_objects, Bucket=self.bucket,
                                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
            errors = [e for e in r.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if errors:
                raise StorageError(f"S3 delete failed for {len(errors)} objects, e.g. {errors[0]}")
