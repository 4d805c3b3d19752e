"""Starts the real components picchio's tests and demos talk to.

Every server runs on a free loopback port, is tracked by its own PID and is
stopped by ``stop()`` (and on interpreter exit).  Nothing here is a mock: etcd
is an etcd binary, S3 is MinIO when built (see the Go-module builds) or the
moto server otherwise.
"""
