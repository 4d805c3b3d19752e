"""The cluster's bucket: existence (create if asked), a conditional-write
probe, lifecycle rules, and purging the cluster's prefix.

The probe matters because picchio's object backend fences writers with
``If-None-Match: *`` — a store that ignores the header would let two writers
overwrite each other's blocks silently.  We PUT a fresh key twice: the first
must succeed and the second must fail with 412.

boto3 is synchronous; callers run these functions in a worker thread.  Every
request has connect/read timeouts and botocore's bounded retries.
"""
from __future__ import annotations

import logging
import uuid
from functools import partial
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, SSLError

from ..model import lifecycle as lc
from ..model.spec import ClusterSpec
from . import AdapterError

log = logging.getLogger(__name__)
PROBE_DIR = "_picchio/probe/"


class StorageError(AdapterError):
    reason = "StorageUnreachable"


@dataclass(frozen=True)
class BucketReport:
    created: bool
    lifecycle_changed: bool
    rules: int  # our rules present after the pass
    unsupported: tuple[str, ...] = ()  # lifecycle actions the server refused


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _status(e: ClientError) -> int:
    return int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def s3_client(spec: ClusterSpec, access_key: str | None, secret_key: str | None, *,
              timeout: float = 10.0, attempts: int = 3, ca_file: str | None = None) -> Any:
    """``ca_file``: the CA from spec.storage.caSecret (written to a private file
    by ``tlsfiles``), to verify an https endpoint signed by a private CA;
    None: the system CAs."""
    return boto3.client(
        "s3",
        endpoint_url=spec.storage.endpoint_url,
        region_name=spec.storage.region or "us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        verify=ca_file or None,
        config=BotoConfig(connect_timeout=timeout, read_timeout=timeout,
                          retries={"max_attempts": attempts, "mode": "standard"},
                          s3={"addressing_style": "path"}),
    )


def _call(what: str, fn: Callable[[], Any], reason: str = "StorageUnreachable") -> Any:
    try:
        return fn()
    except ClientError as e:
        raise StorageError(f"{what}: {_code(e) or _status(e)}: {e}", reason) from e
    except BotoCoreError as e:
        raise _boto_error(what, e, reason) from e


def _boto_error(what: str, e: BotoCoreError, reason: str = "StorageUnreachable") -> StorageError:
    """A transport failure; a TLS verification failure says which field to check."""
    if isinstance(e, SSLError):
        return StorageError(f"{what}: TLS: {e} (check spec.storage.caSecret: the CA that signed the endpoint's "
                            "certificate)", "StorageTLSFailed")
    return StorageError(f"{what}: {e}", reason)


def ensure_bucket(s3: Any, bucket: str, create: bool) -> bool:
    """True if we created it.  A missing bucket without ``createBucket`` is an
    error telling the user which switch to flip."""
    try:
        s3.head_bucket(Bucket=bucket)
        return False
    except ClientError as e:
        if _status(e) not in (404,) and _code(e) not in ("404", "NoSuchBucket", "NotFound"):
            if _status(e) == 403:
                raise StorageError(f"bucket {bucket}: access denied; check spec.storage.credentialsSecret",
                                   "AccessDenied") from e
            raise StorageError(f"bucket {bucket}: {e}") from e
    except BotoCoreError as e:
        raise _boto_error(f"bucket {bucket}", e) from e
    if not create:
        raise StorageError(f"bucket {bucket} does not exist; create it or set spec.storage.createBucket: true",
                           "BucketMissing")
    try:
        s3.create_bucket(Bucket=bucket)
    except ClientError as e:
        if _code(e) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise StorageError(f"create bucket {bucket}: {e}", "BucketCreateFailed") from e
        return False
    log.info("created bucket %s", bucket)
    return True


def probe_conditional_write(s3: Any, bucket: str, root_prefix: str) -> None:
    """PUT a new key with If-None-Match: * twice; the second must be refused."""
    key = f"{root_prefix}{PROBE_DIR}{uuid.uuid4().hex}"
    try:
        _call("conditional-write probe", lambda: s3.put_object(Bucket=bucket, Key=key, Body=b"1", IfNoneMatch="*"))
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=b"2", IfNoneMatch="*")
        except ClientError as e:
            if _status(e) == 412 or _code(e) in ("PreconditionFailed", "412"):
                return
            raise StorageError(f"conditional-write probe: unexpected {e}") from e
        except BotoCoreError as e:
            raise StorageError(f"conditional-write probe: {e}") from e
        raise StorageError(
            f"the S3 server at this endpoint ignores If-None-Match: * (a second conditional PUT of {key} "
            "succeeded); picchio needs conditional writes to fence writers — use MinIO ≥ 2024 or AWS S3",
            "ConditionalWriteUnsupported")
    finally:
        try:
            s3.delete_object(Bucket=bucket, Key=key)
        except (ClientError, BotoCoreError) as e:  # best effort: the key is tiny and under our prefix
            log.warning("could not delete probe object %s: %s", key, e)


def get_rules(s3: Any, bucket: str) -> list[dict[str, Any]]:
    try:
        out = s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    except ClientError as e:
        if _code(e) in ("NoSuchLifecycleConfiguration",) or _status(e) == 404:
            return []
        raise StorageError(f"read lifecycle of {bucket}: {e}", "LifecycleFailed") from e
    except BotoCoreError as e:
        raise StorageError(f"read lifecycle of {bucket}: {e}") from e
    return list(out.get("Rules") or [])


def put_rules(s3: Any, bucket: str, rules: Sequence[dict[str, Any]]) -> None:
    if rules:
        _call(f"write lifecycle of {bucket}",
              lambda: s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": list(rules)}),
              "LifecycleFailed")
    else:
        _call(f"delete lifecycle of {bucket}", lambda: s3.delete_bucket_lifecycle(Bucket=bucket), "LifecycleFailed")


_ABORT = "AbortIncompleteMultipartUpload"


def _rejected_as_invalid(e: StorageError) -> bool:
    cause = e.__cause__
    return isinstance(cause, ClientError) and _code(cause) in ("InvalidArgument", "MalformedXML", "InvalidRequest")


def apply_lifecycle(s3: Any, spec: ClusterSpec, desired: Sequence[dict[str, Any]]) -> tuple[bool, list[str]]:
    """Merge ``desired`` into the bucket's rules → (a PUT was needed, actions
    the server refused).

    MinIO rejects ``AbortIncompleteMultipartUpload`` (it expires stale uploads
    by itself, ``stale_uploads_expiry``); if the server refuses the document,
    the rules are written again without that action and the refusal is
    reported, not hidden.  Read back afterwards: S3 has no conditional
    lifecycle PUT, so a concurrent writer can replace the document between our
    read and write — if our rules are missing afterwards we say so."""
    bucket = spec.storage.bucket or ""
    existing = get_rules(s3, bucket)

    def merged_with(rules: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        try:
            return lc.merge_rules(existing, rules, namespace=spec.namespace, cluster=spec.name,
                                  root_prefix=spec.storage.root_prefix)
        except lc.LifecycleConflict as e:
            raise StorageError(str(e), "LifecycleConflict") from None

    merged = merged_with(desired)
    if lc.rules_equal(existing, merged):
        return False, []
    unsupported: list[str] = []
    try:
        put_rules(s3, bucket, merged)
    except StorageError as e:
        if not (_rejected_as_invalid(e) and any(_ABORT in r for r in desired)):
            raise
        desired = [r for r in desired if _ABORT not in r]
        unsupported = [_ABORT]
        log.info("bucket %s refuses %s lifecycle rules; writing the others", bucket, _ABORT)
        merged = merged_with(desired)
        if lc.rules_equal(existing, merged):
            return False, unsupported
        put_rules(s3, bucket, merged)
    missing = lc.missing_rules(get_rules(s3, bucket), desired)
    if missing:
        raise StorageError(f"lifecycle rules {missing} missing after writing them (a concurrent writer, or the "
                           "server dropped them); will retry", "LifecycleFailed")
    return True, unsupported


def ensure_storage(s3: Any, spec: ClusterSpec) -> BucketReport:
    """Everything StorageReady stands for: bucket, conditional writes, lifecycle."""
    bucket = spec.storage.bucket or ""
    created = ensure_bucket(s3, bucket, spec.storage.create_bucket)
    probe_conditional_write(s3, bucket, spec.storage.root_prefix)
    desired = lc.desired_rules(spec)
    changed, unsupported = apply_lifecycle(s3, spec, desired)
    kept = [r for r in desired if not any(a in r for a in unsupported)]
    return BucketReport(created=created, lifecycle_changed=changed, rules=len(kept), unsupported=tuple(unsupported))


def purge(s3: Any, spec: ClusterSpec, *, max_objects: int = 100_000) -> tuple[int, bool]:
    """deletionPolicy=Delete: remove our lifecycle rules and up to
    ``max_objects`` objects under the cluster's prefix.  Returns (deleted,
    done); the handler calls again until done, so one call never runs
    unbounded."""
    bucket = spec.storage.bucket or ""
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as e:
        if _status(e) == 404:
            return 0, True  # nothing left to purge
        raise StorageError(f"bucket {bucket}: {e}") from e
    except BotoCoreError as e:
        raise StorageError(f"bucket {bucket}: {e}") from e
    apply_lifecycle(s3, spec, [])
    deleted = 0
    prefix = spec.storage.root_prefix
    while deleted < max_objects:
        batch = min(1000, max_objects - deleted)
        page = _call("list objects", partial(s3.list_objects_v2, Bucket=bucket, Prefix=prefix, MaxKeys=batch))
        keys = [{"Key": o["Key"]} for o in page.get("Contents") or ()]
        if not keys:
            return deleted, True
        out = _call("delete objects", partial(s3.delete_objects, Bucket=bucket, Delete={"Objects": keys, "Quiet": True}))
        errors = out.get("Errors") or []
        if errors:
            raise StorageError(f"delete objects: {len(errors)} failed, e.g. {errors[0]}", "DeleteFailed")
        deleted += len(keys)
    return deleted, False
