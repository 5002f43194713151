"""The one place where the API server's answers become our errors, and where retries are decided.

The official client raises ``ApiException`` for HTTP errors and urllib3 errors for transport
failures, and retries connection errors on its own. Both are folded here into the ``ApiError``
family (``errors.py``), and one tenacity policy decides what is retried: 429 (honouring
Retry-After), 5xx, refused or reset connections and read time-outs. 4xx answers are never
retried: they will not change by asking again. The policy's time (the budget, the back-off) is
kept on the clock and slept with the sleeper ``call`` is given, so that unit tests run a whole
retry schedule on a fake clock without waiting.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from k8s_step_operator._errors import (
    ApiError,
    ConfigurationError,
    ConflictError,
    FieldCause,
    ForbiddenError,
    InvalidError,
    NotFoundError,
    ServerUnavailableError,
    TooManyRequestsError,
)
from k8s_step_operator._objects import Status

__all__ = [
    "LoadedClient",
    "abort",
    "api_error",
    "call",
    "load_api_client",
    "load_client",
    "read_json",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    urllib3.exceptions.HTTPError,  # MaxRetryError, ProtocolError, ReadTimeoutError, ...
    ConnectionError,
    TimeoutError,
)

# Retries stop after this long in total; a control plane that is gone longer than this is down.
RETRY_BUDGET_SECONDS = 120.0
_BACKOFF_FIRST = 0.2
_BACKOFF_MAX = 5.0


# Where a pod's ServiceAccount puts its namespace; also the sign of running in a cluster.
_SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_SA_TOKEN_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
_CONFIG_ACCEPTED = (
    "a kubeconfig file ($KUBECONFIG or ~/.kube/config) or, in a pod, its ServiceAccount "
    "(in-cluster)"
)


@dataclass(frozen=True)
class LoadedClient:
    """An API client and the namespace it defaults to, the way kubectl picks it."""

    api_client: k8s.ApiClient
    namespace: str
    source: str
    in_cluster: bool = False


def _in_cluster_available() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and _SA_TOKEN_FILE.exists()


def _default_kubeconfig() -> str | None:
    env = os.environ.get("KUBECONFIG", "").strip()
    if env:
        return env.split(os.pathsep)[0]
    home = Path("~/.kube/config").expanduser()
    return str(home) if home.exists() else None


def load_client(
    kubeconfig: str | None = None,
    context: str | None = None,
    in_cluster: bool | None = None,
) -> LoadedClient:
    """Build an API client the way kubectl and the usual clients find a cluster.

    Unless told otherwise: ``kubeconfig`` if given, else ``$KUBECONFIG``, else
    ``~/.kube/config``, else the pod's ServiceAccount when running in a cluster. The default
    namespace is the context's (kubeconfig) or the ServiceAccount's (in-cluster), else
    ``default``.

    Args:
        kubeconfig: Path of a kubeconfig.
        context: A context of that kubeconfig; ``None`` uses its current context.
        in_cluster: ``True`` forces the pod's ServiceAccount, ``False`` forces a kubeconfig,
            ``None`` finds one as described.

    Raises:
        ConfigurationError: If no configuration is found or it cannot be loaded (the field
            names what to set).
    """
    configuration = k8s.Configuration()
    if in_cluster is None:
        in_cluster = kubeconfig is None and _default_kubeconfig() is None
        if in_cluster and not _in_cluster_available():
            raise ConfigurationError(
                "kubeconfig_path",
                _CONFIG_ACCEPTED,
                None,
                detail="no KUBECONFIG, no ~/.kube/config, and not running in a pod",
            )
    if in_cluster:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException as exc:
            raise ConfigurationError("incluster", _CONFIG_ACCEPTED, True, detail=str(exc)) from exc
        try:
            namespace = _SA_NAMESPACE_FILE.read_text(encoding="utf-8").strip() or "default"
        except OSError:
            namespace = "default"
        source = "in-cluster ServiceAccount"
    else:
        path = kubeconfig or _default_kubeconfig()
        if path is None:
            raise ConfigurationError(
                "kubeconfig_path", _CONFIG_ACCEPTED, None, detail="~/.kube/config does not exist"
            )
        path = str(Path(path).expanduser())
        if not Path(path).is_file():
            raise ConfigurationError(
                "kubeconfig_path", "the path of an existing kubeconfig file", path
            )
        try:
            contexts, current = k8s_config.list_kube_config_contexts(config_file=path)
            chosen = current
            if context is not None:
                chosen = next((c for c in contexts if c.get("name") == context), None)
                if chosen is None:
                    names = ", ".join(sorted(str(c.get("name")) for c in contexts)) or "none"
                    raise ConfigurationError(
                        "kubernetes_context", f"a context of {path} ({names})", context
                    )
            k8s_config.load_kube_config(
                config_file=path, context=context, client_configuration=configuration
            )
        except ConfigurationError:
            raise
        except (k8s_config.ConfigException, OSError, ValueError, TypeError) as exc:
            raise ConfigurationError(
                "kubeconfig_path", "a valid kubeconfig file", path, detail=str(exc)
            ) from exc
        namespace = str(((chosen or {}).get("context") or {}).get("namespace") or "default")
        source = f"kubeconfig {path}"
    disable_transport_retries(configuration)
    return LoadedClient(k8s.ApiClient(configuration), namespace, source, in_cluster)


def load_api_client(
    kubeconfig: str | None = None, context: str | None = None, in_cluster: bool | None = None
) -> k8s.ApiClient:
    """``load_client(...).api_client``: a client whose transport retries are off."""
    return load_client(kubeconfig, context, in_cluster).api_client


def disable_transport_retries(configuration: Any) -> None:
    """Turn off urllib3's own retries: they would multiply ours and hide the failures."""
    configuration.retries = urllib3.util.Retry(total=0, connect=0, read=0, redirect=3)
    # Many threads share one client; the pool must hold at least the watches and log streams.
    configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize, 32)


def _status_body(exc: ApiException) -> Status:
    """The server's ``Status`` (``{}`` when it sent none; a text body is its message)."""
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not body:
        return {}
    try:
        parsed: Status = json.loads(body)
    except (TypeError, ValueError):
        return {"message": str(body)[:2000]}
    return parsed if isinstance(parsed, dict) else {}  # any JSON may come: only an object is one


def _retry_after(exc: ApiException, body: Status) -> float | None:
    headers = exc.headers or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    if value is None:
        value = (body.get("details") or {}).get("retryAfterSeconds")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def api_error(exc: BaseException, operation: str = "") -> ApiError:
    """Translate a client exception into the matching ``ApiError`` subclass.

    Args:
        exc: An ``ApiException`` or a transport error raised by the client.
        operation: What was being done, e.g. ``create Job ns/name``; it prefixes the message.

    Returns:
        The error to raise (``raise api_error(e, op) from e``).
    """
    if not isinstance(exc, ApiException):
        return ServerUnavailableError(
            f"{type(exc).__name__}: {exc}", reason="ConnectionError", operation=operation
        )
    body = _status_body(exc)
    status = int(exc.status or 0)
    reason = str(body.get("reason") or exc.reason or "")
    message = str(body.get("message") or exc.reason or "")
    causes = [
        FieldCause(
            field=str(c.get("field", "")),
            reason=str(c.get("reason", "")),
            message=str(c.get("message", "")),
        )
        for c in (body.get("details") or {}).get("causes") or []
        if isinstance(c, dict)
    ]
    cls: type[ApiError]
    if status == 403:
        cls = ForbiddenError
    elif status == 404:
        cls = NotFoundError
    elif status == 409:
        cls = ConflictError
    elif status == 422:
        cls = InvalidError
    elif status == 429:
        cls = TooManyRequestsError
    elif status >= 500 or status == 0:
        cls = ServerUnavailableError
    else:
        cls = ApiError
    return cls(
        message,
        status=status,
        reason=reason,
        causes=causes,
        retry_after=_retry_after(exc, body),
        operation=operation,
        body=body,
    )


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, TooManyRequestsError) and exc.retry_after is not None:
        return min(max(exc.retry_after, 0.0), 60.0)
    ceiling = min(_BACKOFF_MAX, _BACKOFF_FIRST * (2 ** (state.attempt_number - 1)))
    return random.uniform(ceiling / 2, ceiling)  # jitter: many waiters must not retry in step


def _wait_within(budget: float, elapsed: Callable[[], float]) -> Callable[[RetryCallState], float]:
    """``_wait``, cut to what is left of the budget, so that the budget is the whole wait."""

    def wait(state: RetryCallState) -> float:
        left = budget - elapsed()
        return max(0.0, min(_wait(state), left))

    return wait


def _stop_after(budget: float, elapsed: Callable[[], float]) -> Callable[[RetryCallState], bool]:
    """Stop once the budget is spent: ``stop_after_delay`` on the clock ``elapsed`` reads."""

    def stop(state: RetryCallState) -> bool:
        return elapsed() >= budget

    return stop


# Told of each retry: (operation, the error, seconds until the next attempt, attempt number).
RetryListener = Callable[[str, str, float, int], None]
# Marks the records that say a call is retried, so a console can collapse them by that mark.
RETRY_RECORD = {"k8sso_retry": True}


def _before_sleep(
    operation: str, on_retry: RetryListener | None
) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("retrying after %s (attempt %d)", exc, state.attempt_number, extra=RETRY_RECORD)
        if on_retry is not None:
            delay = state.next_action.sleep if state.next_action is not None else 0.0
            on_retry(operation, str(exc), float(delay), state.attempt_number)

    return before_sleep


def call(
    operation: str,
    fn: Callable[..., T],
    *args: Any,
    retry: bool = True,
    budget: float = RETRY_BUDGET_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    on_retry: RetryListener | None = None,
    **kwargs: Any,
) -> T:
    """Call the API, translating failures and retrying only what may succeed next time.

    Args:
        operation: Words for the log and the error message, e.g. ``create Job ns/name``.
        fn: The client method.
        *args: Its positional arguments.
        retry: ``False`` to translate without retrying (e.g. a create whose outcome the caller
            resolves itself).
        budget: Seconds of retrying before the last error is raised.
        sleep: Waits between attempts (``time.sleep``).
        monotonic: The clock the budget is counted on (``time.monotonic``).
        on_retry: Told of each retry, before its wait (besides the log line).
        **kwargs: Its keyword arguments.

    Returns:
        Whatever ``fn`` returns.

    Raises:
        ApiError: The translated failure.
    """

    def attempt() -> T:
        try:
            return fn(*args, **kwargs)
        except ApiException as e:
            raise api_error(e, operation) from e
        except _TRANSPORT_ERRORS as e:
            raise api_error(e, operation) from e

    if not retry:
        return attempt()
    started = monotonic()

    def elapsed() -> float:
        return monotonic() - started

    retrying = Retrying(
        retry=retry_if_exception_type((TooManyRequestsError, ServerUnavailableError)),
        wait=_wait_within(budget, elapsed),
        stop=_stop_after(budget, elapsed),
        sleep=sleep,
        before_sleep=_before_sleep(operation, on_retry),
        reraise=True,
    )
    return retrying(attempt)


def abort(response: Any) -> None:
    """Close a streaming response now, even while another thread is blocked reading it.

    Closing an SSL socket does not wake a thread blocked in ``recv``; shutting it down does.
    """
    shutdown = getattr(response, "shutdown", None)  # urllib3 >= 2.3
    with contextlib.suppress(Exception):
        if shutdown is not None:
            shutdown()
        else:
            sock = getattr(getattr(response, "_connection", None), "sock", None)
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(Exception):
        response.close()


def read_json(response: Any) -> Any:
    """Decode a response fetched with ``_preload_content=False``.

    Raw JSON is used on hot paths (lists, watches): the client's model deserialization costs
    milliseconds per object, which hundreds of concurrent steps cannot afford.
    """
    try:
        return json.loads(response.data)
    finally:
        response.release_conn()
