"""The adapter over NVML (``pynvml``, from nvidia-ml-py): one reading of a node's GPUs.

:class:`reader.Reader` calls the library's functions and returns a
:class:`gpu_rightsizer.nodeusage.readings.NodeReading`. It works with anything that has
pynvml's functions, constants and ``NVMLError`` (the real module, or a fake in tests). It never
raises for NVML's sake: a driver that is missing or not loaded, a field a GPU does not support,
a GPU that fell off the bus are each recorded per field (with NVML's error code) and the rest
of the reading goes on. It never reads ``/proc``, never talks to Kubernetes and never serves
anything.
"""
