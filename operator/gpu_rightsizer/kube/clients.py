"""A ``kubernetes.client.ApiClient`` from a kubeconfig, the default kubeconfig or the pod's
ServiceAccount, with a timeout on every request.

The generated client waits forever unless each call passes ``_request_timeout``; the client
built here applies ``timeout`` to every request that does not set its own, so a hung API server
stalls one sweep for seconds, not the operator for good. It is meant for request/response calls
(lists, gets, patches), not for long watches.
"""

from __future__ import annotations

import json
import os
from typing import Any

import kubernetes.client
import kubernetes.config

DEFAULT_TIMEOUT: tuple[float, float] = (5.0, 60.0)
"""(connect, read) seconds for each request; the read allows for large paginated lists."""

USER_AGENT = "gpu-rightsizer"
SERVICE_HOST_ENV = "KUBERNETES_SERVICE_HOST"
KUBECONFIG_ENV = "KUBECONFIG"
DEFAULT_KUBECONFIG = "~/.kube/config"


class _TimedApiClient(kubernetes.client.ApiClient):
    """An ApiClient that gives each request a default timeout."""

    def __init__(self, configuration: Any, timeout: float | tuple[float, float]) -> None:
        super().__init__(configuration=configuration)
        self.request_timeout = timeout

    def call_api(
        self,
        method: str,
        url: str,
        header_params: Any = None,
        body: Any = None,
        post_params: Any = None,
        _request_timeout: Any = None,
    ) -> Any:
        return super().call_api(
            method,
            url,
            header_params=header_params,
            body=body,
            post_params=post_params,
            _request_timeout=_request_timeout or self.request_timeout,
        )


def api_client(
    kubeconfig: str | os.PathLike[str] | None = None,
    *,
    context: str | None = None,
    token: str | None = None,
    timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
    retries: int | None = None,
    connections: int | None = None,
) -> Any:
    """An ApiClient for the cluster, chosen like kubectl and kopf choose it.

    ``kubeconfig`` names a kubeconfig file; without it, the in-cluster ServiceAccount is used
    when running in a pod (``KUBERNETES_SERVICE_HOST`` set and no ``KUBECONFIG``), else the
    default kubeconfig (``KUBECONFIG`` or ``~/.kube/config``). ``context`` picks a kubeconfig
    context. ``token`` replaces the kubeconfig's credentials with that bearer token (the
    server and its CA still come from the kubeconfig or the pod): how tests act as a
    ServiceAccount. ``retries`` caps urllib3's retries of failed connections and reads (its
    default, 3, when None), each of which may take up to ``timeout`` again. ``connections``
    is how many connections to the API server are kept open for reuse (urllib3's pool size;
    the library's default is five per CPU): at least as many as threads that write. Raises
    ``kubernetes.config.ConfigException`` when no configuration is found.
    """
    configuration = kubernetes.client.Configuration()
    in_cluster = (
        kubeconfig is None
        and bool(os.environ.get(SERVICE_HOST_ENV))
        and not os.environ.get(KUBECONFIG_ENV)
    )
    # kubernetes.config is untyped.
    load_incluster: Any = kubernetes.config.load_incluster_config
    load_kubeconfig: Any = kubernetes.config.load_kube_config
    if in_cluster:
        load_incluster(client_configuration=configuration)
    else:
        load_kubeconfig(
            # The library reads KUBECONFIG once, at import; read it now.
            config_file=(
                os.fspath(kubeconfig)
                if kubeconfig is not None
                else os.environ.get(KUBECONFIG_ENV) or DEFAULT_KUBECONFIG
            ),
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    if token is not None:
        configuration.api_key = {"BearerToken": f"Bearer {token}"}
        configuration.api_key_prefix = {}
        configuration.refresh_api_key_hook = None
        configuration.cert_file = None
        configuration.key_file = None
        configuration.username = None
        configuration.password = None
    if retries is not None:
        configuration.retries = retries
    if connections is not None:
        configuration.connection_pool_maxsize = connections
    client = _TimedApiClient(configuration, timeout)
    client.user_agent = USER_AGENT
    return client


def read_json(response: Any) -> dict[str, Any]:
    """Decode a raw (``_preload_content=False``) response and hand its connection back."""
    try:
        decoded = json.loads(response.data)
    finally:
        response.release_conn()
    if not isinstance(decoded, dict):
        raise ValueError(f"expected a JSON object, got {type(decoded).__name__}")
    return decoded
