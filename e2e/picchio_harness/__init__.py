"""Starts the real components picchio's tests and demos talk to.

Every server runs on a free loopback port, is tracked by its own PID and is
stopped by ``stop()`` (and on interpreter exit).  Nothing here is a mock: etcd
is an etcd binary, S3 is MinIO (the Go-module build; moto only where a test
asks for it by name and says why).
"""
