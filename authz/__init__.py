"""authz: JWT authorization for Envoy's ext_authz (gRPC, v3)."""

__all__ = ["AUTHORIZATION_SERVICE", "__version__"]

__version__ = "0.1.0"

# The gRPC service authz implements, as Envoy's ext_authz calls it: the health
# service name, the span's rpc.service. Here so that the exec probe can name it
# without importing the server.
AUTHORIZATION_SERVICE = "envoy.service.auth.v3.Authorization"
