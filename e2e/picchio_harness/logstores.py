"""LogStore server processes on loopback: the product's starter
(``logstore.dev.logstores``, which ``picchio bench --backend service`` uses),
re-exported under the harness' import path."""
from logstore.dev.logstores import (  # noqa: F401 - re-exports
    LogStoreProc, logstore_argv, logstore_config, logstore_env, start_logstores, wait_registered,
)
