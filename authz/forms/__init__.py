"""Normal forms: a request's path, host and URI as Envoy and the upstream read them.

Below the configuration and the Check alike: a route's path in the file and a
request's path are put in the same form by the same code (paths.py,
lookalikes.py), as are a DPoP proof's ``htu`` and the request URI (htu.py).
Each module refuses what its readers could disagree about.
"""
