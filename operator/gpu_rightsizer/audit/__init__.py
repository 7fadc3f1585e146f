"""The fleet audit's pure core: rows and totals of a fleet's recommendations, idle allocations,
consolidation onto the cluster's nodes, sharing and what-if.

It never does I/O: no Kubernetes, no Prometheus, no files, no clock.
"""
