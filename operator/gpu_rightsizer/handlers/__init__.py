"""The kopf shell: the only package that imports kopf.

Handlers are thin: they validate at the boundary and hand work to :mod:`gpu_rightsizer.reconcile`.
Importing this package registers the handlers with kopf.
"""
