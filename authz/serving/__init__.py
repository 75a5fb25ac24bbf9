"""Serving Checks on gRPC's own threads: admission, the Check handler, the server."""
