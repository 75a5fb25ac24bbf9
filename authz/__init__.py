"""authz: JWT authorization for Envoy's ext_authz (gRPC, v3)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
