"""Adapters: the operator's only I/O — the Kubernetes API (server-side apply,
status), the bucket (boto3), the etcd keyspace (aetcd) and the ``logstore``
client.  Each call has a deadline; retries are bounded and logged; failures
surface as the typed errors below so handlers can turn them into conditions."""


class AdapterError(Exception):
    """An external system failed; ``reason`` is the CamelCase condition reason
    the handler reports, the message says what to do."""

    reason = "Error"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        if reason:
            self.reason = reason
