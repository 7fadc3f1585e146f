"""What gpu-rightsizer itself emits: structured JSON logs and its own Prometheus metrics.

Instruments are defined in one place (``instruments``), in their own registry, and served at
``/metrics`` by ``serving``; logging is configured once at start-up (``logs``), for our own
structlog loggers and the libraries that log through the standard library alike. Never imports
kopf; never reads anything from the cluster.
"""
