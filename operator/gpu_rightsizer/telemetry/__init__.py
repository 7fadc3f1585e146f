"""What gpu-rightsizer itself emits: structured JSON logs and its own Prometheus metrics.

Instruments are defined in one place (``instruments``); logging is configured once at start-up
(``logs``). Never imports kopf; never reads anything from the cluster.
"""
