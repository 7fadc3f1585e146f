"""Pure data types of gpu-rightsizer: the GPUWorkload resource, the GPU catalog, usage profiles.

Everything here is a pydantic model or an enum: validation and (de)serialisation only. No
function in this package does I/O, talks to Kubernetes or Prometheus, logs, or reads the clock.
Every other package builds on these types; this package imports none of them.
"""
