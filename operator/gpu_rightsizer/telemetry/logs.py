"""Structured logging: one JSON object per line, whoever logs it.

``configure()`` sets up structlog for our own code and installs one handler on the root logger
whose formatter is structlog's ``ProcessorFormatter``. Libraries that log through the standard
library (kopf, kubernetes, urllib3) therefore come out in the same shape as our own lines:

    {"event": "sweep done", "workloads": 12, "level": "info", "logger": "gpu_rightsizer.reconcile",
     "timestamp": "2025-01-01T00:00:00.000000Z"}

kopf's per-object loggers attach the object they are about as ``record.k8s_ref`` (a dict with
apiVersion, kind, name, uid and namespace; see ``kopf/_core/actions/loggers.py``). Its kind,
namespace and name become fields of the line. Its other extras (``settings``, ``k8s_skip``)
are kopf's plumbing and are left out.

kopf's own CLI (``kopf run``) installs a plain-text stream handler on the root logger before the
operator starts. ``configure()`` removes that handler too, so calling it again from a startup
handler leaves a single JSON stream. Calling ``configure()`` more than once is safe: it replaces
its own handler rather than adding another.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any, Final, TextIO

import structlog

FORMATS: Final = ("json", "console")

# The class name of the stream handler that `kopf run` puts on the root logger. Matched by name
# because this package must not import kopf.
_KOPF_STREAM_HANDLER: Final = "_KopfStreamHandler"


class _RootHandler(logging.StreamHandler[TextIO]):
    """The root handler ``configure()`` installs; its own class so it is installed only once."""


def _add_kopf_object(
    logger: Any, method_name: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Surface the Kubernetes object that a kopf log record is about as plain fields."""
    record = event_dict.get("_record")
    ref = getattr(record, "k8s_ref", None)
    if isinstance(ref, Mapping):
        for key in ("kind", "namespace", "name"):
            value = ref.get(key)
            if value is not None:
                event_dict.setdefault(key, value)
    return event_dict


def _level_number(level: str) -> int:
    number = logging.getLevelNamesMapping().get(level.upper())
    if number is None:
        raise ValueError(
            f"unknown log level {level!r}: use DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
    return number


def configure(level: str = "INFO", fmt: str = "json", *, stream: TextIO | None = None) -> None:
    """Route structlog and standard-library logging to one renderer on ``stream`` (stderr).

    ``fmt`` is ``"json"`` (one JSON object per line, for log collectors) or ``"console"``
    (aligned, human-readable lines for a terminal). ``level`` is a standard level name and is
    set on the root logger, so it applies to libraries as well.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}: use one of {', '.join(FORMATS)}")
    level_number = _level_number(level)
    output = stream if stream is not None else sys.stderr

    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )

    rendering: list[structlog.typing.Processor]
    if fmt == "json":
        rendering = [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=False),
        ]
    else:
        rendering = [structlog.dev.ConsoleRenderer(colors=_is_tty(output))]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, _add_kopf_object, structlog.processors.StackInfoRenderer()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering],
    )

    handler = _RootHandler(output)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [
        existing
        for existing in root.handlers
        if not isinstance(existing, _RootHandler)
        and type(existing).__name__ != _KOPF_STREAM_HANDLER
    ]
    root.addHandler(handler)
    root.setLevel(level_number)


def _is_tty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty()) if callable(isatty) else False


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger named ``name`` (conventionally the module's ``__name__``)."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
