"""Root of the test suite: loads the fixture plugins shared by all test folders."""

pytest_plugins = [
    "tests.support.cluster",
    "tests.support.prometheus",
    "tests.support.victoriametrics",
]
