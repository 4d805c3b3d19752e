"""Names shared by the model, the adapters and the manifests.

Kept in one place because a rename here is a breaking change for running
clusters (labels select pods, IDs mark lifecycle rules as ours)."""
from __future__ import annotations

GROUP = "picchio.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CLUSTER_KIND = "WoodpeckerCluster"
CLUSTER_PLURAL = "woodpeckerclusters"
LOG_KIND = "WoodpeckerLog"
LOG_PLURAL = "woodpeckerlogs"

FIELD_MANAGER = "picchio-operator"
FINALIZER = "picchio.dev/finalizer"
ANNOTATION_PREFIX = "picchio.dev"
CONFIG_HASH_ANNOTATION = "picchio.dev/config-hash"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
APP_NAME = "woodpecker"
COMPONENT_LOGSTORE = "logstore"
COMPONENT_CONFIG = "config"
COMPONENT_CLIENT = "client"
COMPONENT_CREDENTIALS = "credentials"
MANAGED_BY = "picchio-operator"

SERVICE_PORT = 18080
METRICS_PORT = 9091
CONFIG_DIR = "/etc/picchio"
CONFIG_FILE = "woodpecker.yaml"
MILVUS_CONFIG_FILE = "milvus.yaml"  # the client ConfigMap's sections for a Milvus (model.milvus)
DATA_DIR = "/var/lib/woodpecker"

# Environment variables through which secrets reach the LogStore pods; they
# override the matching keys of woodpecker.yaml (see model.config).
ENV_SECRET_KEYS = {
    "minio.accessKeyID": "PICCHIO_MINIO_ACCESSKEYID",
    "minio.secretAccessKey": "PICCHIO_MINIO_SECRETACCESSKEY",
    "etcd.auth.userName": "PICCHIO_ETCD_AUTH_USERNAME",
    "etcd.auth.password": "PICCHIO_ETCD_AUTH_PASSWORD",
}
S3_SECRET_KEYS = ("accessKeyID", "secretAccessKey")
ETCD_SECRET_KEYS = ("username", "password")

# TLS material from Secrets, mounted read-only into the LogStore pods; the
# ConfigMaps name these files (etcd.ssl.*, minio.ssl.tlsCACert), never their
# contents.  Outside CONFIG_DIR: a ConfigMap volume is read-only, so no mount
# point can be made inside it.
ETCD_TLS_DIR = "/etc/picchio-tls/etcd"
STORAGE_CA_DIR = "/etc/picchio-tls/storage-ca"
TLS_CA, TLS_CERT, TLS_KEY = "ca.crt", "tls.crt", "tls.key"  # the keys cert-manager writes
ETCD_TLS_KEYS = (TLS_CA, TLS_CERT, TLS_KEY)
STORAGE_CA_KEYS = (TLS_CA,)

# Object names derived from the cluster's name.
def statefulset_name(cluster: str) -> str:
    return f"{cluster}-server"


def headless_service_name(cluster: str) -> str:
    return f"{cluster}-server-headless"


def client_service_name(cluster: str) -> str:
    return f"{cluster}-server-client"


def metrics_service_name(cluster: str) -> str:
    return f"{cluster}-server-metrics"


def configmap_name(cluster: str) -> str:
    return f"{cluster}-config"


def pdb_name(cluster: str) -> str:
    return f"{cluster}-server"


def client_configmap_name(cluster: str) -> str:
    """The ConfigMap applications mount: woodpecker.yaml for clients."""
    return f"{cluster}-client"


def etcd_client_secret_name(cluster: str) -> str:
    """The operator-owned Secret with the scoped etcd user's credentials
    (only when spec.etcd.credentialsSecret is set)."""
    return f"{cluster}-etcd-client"


def etcd_principal_name(namespace: str, cluster: str) -> str:
    """etcd user *and* role of one cluster; namespace and name together, so
    two clusters sharing an etcd never share a principal."""
    return f"picchio-{namespace}-{cluster}"
