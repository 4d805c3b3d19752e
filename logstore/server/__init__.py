"""The LogStore server (service mode, QuorumBuffer): staged segment files on
local disk, the gRPC LogStore service, membership in etcd, health and metrics."""
