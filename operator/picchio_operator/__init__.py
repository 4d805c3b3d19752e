"""picchio-operator: WoodpeckerCluster and WoodpeckerLog, reconciled by kopf.

The operator is layered like the WAL:

* ``model`` — pure functions, no I/O.  A WoodpeckerCluster (and its rendered
  configuration) becomes the desired StatefulSet, Services, ConfigMap and
  PodDisruptionBudget; a WoodpeckerLog plus the segments observed in etcd
  becomes its status and the retention watermark; conditions are merged by
  Kubernetes API conventions.  Everything here is tested with golden YAML.
* ``adapters`` — the only code that talks to the outside: server-side apply
  to the API server, the bucket (boto3), the etcd keyspace (aetcd) and the
  ``logstore`` client.  Every call has a deadline and bounded retries.
* ``handlers`` — kopf handlers, a few lines each: read, call the model, apply,
  write status.  Failures become conditions and kopf's temporary-error backoff,
  never a crash loop.
* ``main`` — the process: peering, liveness, metrics, logging, shutdown.

Usage (the ``picchio operator run`` command calls this)::

    from picchio_operator.main import run
    run(["--all-namespaces", "--metrics-port", "9090"])
"""
