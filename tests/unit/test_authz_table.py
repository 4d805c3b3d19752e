"""The role table of logstore.authz against the RPCs the LogStore serves."""
from logstore import authz
from logstore.rpc import METHODS


def test_every_rpc_has_roles_and_admin_may_call_all() -> None:
    assert set(authz.ALLOWED) == set(METHODS)
    assert all(authz.allowed("admin", m) and authz.allowed("writer", m) for m in METHODS)
    assert authz.allowed("admin", "SomeFutureRpc") and not authz.allowed("writer", "SomeFutureRpc")


def test_reader_gets_the_reads_only() -> None:
    assert {m for m in METHODS if authz.allowed("reader", m)} == {
        "GetBatchEntriesAdv", "GetSegmentLastAddConfirmed", "GetSegmentBlockCount", "SubscribeEntries"}


def test_role_from_common_name() -> None:
    assert authz.role_of("writer:app-1") == "writer"
    assert authz.role_of("reader:a:b") == "reader"
    for cn in (None, "", "writer", "writer:", "root:x", "Writer:x", "picchio-client"):
        assert authz.role_of(cn) is None, cn
        assert authz.refusal(cn, "GetBatchEntriesAdv") is not None
    msg = authz.refusal("reader:x", "CleanSegment")
    assert msg is not None and "reader" in msg and "CleanSegment" in msg
