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
COMPONENT_TLS = "tls"
MANAGED_BY = "picchio-operator"

# NetworkPolicy peers (model.netpol).  An application pod carries
# CLIENT_LABEL=<cluster> to reach that cluster's LogStores.  OPERATOR_POD_LABELS is the
# operator Deployment's selector (manifests/deployment.yaml; a test keeps them equal);
# its namespace comes from OPERATOR_NAMESPACE_ENV (downward API), else the manifests' default.
CLIENT_LABEL = "picchio.dev/client"
OPERATOR_POD_LABELS = {"app.kubernetes.io/name": "picchio-operator"}
OPERATOR_NAMESPACE_ENV = "POD_NAMESPACE"
DEFAULT_OPERATOR_NAMESPACE = "picchio-system"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set on every namespace by the API server (1.22+)

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

# The operator's own PKI for the LogStores' gRPC port (spec.tls, model.pki).  Whole-Secret
# volumes (never subPath), so the kubelet refreshes renewed files and the LogStores reload them.
LOGSTORE_TLS_DIR = "/etc/picchio-tls/logstore"
CLIENT_TLS_DIR = "/etc/picchio-tls/client"  # where applications mount <name>-client-tls / -reader-tls
CA_KEY = "ca.key"
# kubectl annotate wpc NAME picchio.dev/renew-certificates=true (leaves now) or =ca (rotate the CA);
# the operator removes the annotation once done.
RENEW_CERTS_ANNOTATION = "picchio.dev/renew-certificates"
CLIENT_TLS_SECRET_ANNOTATION = "picchio.dev/client-tls-secret"  # on <name>-client: the Secret to mount

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


def networkpolicy_name(cluster: str) -> str:
    """The NetworkPolicy guarding the LogStore pods (service mode)."""
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


def cluster_ca_secret_name(cluster: str) -> str:
    """The cluster CA's certificate and key: for the operator only."""
    return f"{cluster}-cluster-ca"


def logstore_tls_secret_name(cluster: str) -> str:
    """The LogStores' server certificate, key and trust bundle."""
    return f"{cluster}-logstore-tls"


def client_tls_secret_name(cluster: str) -> str:
    """A writer client certificate for applications."""
    return f"{cluster}-client-tls"


def reader_tls_secret_name(cluster: str) -> str:
    """A read-only client certificate for applications."""
    return f"{cluster}-reader-tls"
