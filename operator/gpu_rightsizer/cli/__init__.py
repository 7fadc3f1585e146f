"""The ``gpu-rightsizer`` command line: the imperative shell around the core.

Reads files, calls the pure core, prints tables, JSON or YAML. Bad input ends in one line on
stderr naming the file and field, and a non-zero exit code; never a traceback. Nothing in the
core may import this package.
"""
