"""TF Serving's REST API (port 8501) for the embedded server, on aiohttp.

The routes, status codes and response texts follow TF Serving's HTTP front end
(model_servers/http_server.cc, http_rest_api_handler.cc, http_rest_api_util.cc), so a `requests`
or `curl` call written for the real server works here unchanged:

    GET  /v1/models/{name}[/versions/{v} | /labels/{l}]            model status
    GET  /v1/models/{name}[/versions/{v} | /labels/{l}]/metadata   signature defs
    POST /v1/models/{name}[/versions/{v} | /labels/{l}]:predict    (also :classify, :regress)
    GET  /monitoring/prometheus/metrics                            when monitoring is enabled

aiohttp runs on its own event loop in a thread of the server process; parsing JSON and running
the model happen in a thread pool so a slow request never stalls the loop (or the other calls),
and bodies of a megabyte or more are parsed in a child process (`json_document`) so they do
not hold the interpreter that gRPC calls need. Errors are written whole (TF Serving cuts them
only on gRPC). Careless or hostile clients meet limits TF Serving has or that keep the process
healthy: gzip bodies inflate to at most 100 MB, a connection must send its request within
IDLE_TIMEOUT_S and its body within BODY_TIMEOUT_S, at most MAX_CONNECTIONS are open at once,
and metric labels only name served models.
Tensor conversion lives in `json_tensors`, JSON reading in `json_document`, metrics in `metrics`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import grpc
from aiohttp import web

from helpers.server import json_document, json_tensors, metrics
from helpers.server.calls import NO_DEADLINE, Calls, Deadline, Target
from helpers.server.errors import (
    SESSION_RUN_TIMEOUT_MESSAGE,
    ServingError,
    deadline_exceeded,
    to_serving_error,
)

log = logging.getLogger("helpers.server.rest")

#: TF Serving's route patterns (case-insensitive, matched against the whole path).
PREDICTION_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
#: Paths the REST handler owns; anything else is a plain 404, as in TF Serving.
API_PATH = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)

DEFAULT_SIGNATURE = "serving_default"
#: --rest_api_timeout_in_ms default.
DEFAULT_TIMEOUT_MS = 30_000
#: TF Serving accepts large bodies (the gRPC side allows ~2 GB); aiohttp's default is 1 MiB.
MAX_BODY_BYTES = 2**31 - 1
#: Largest body a `Content-Encoding: gzip` request may inflate to: TF Serving's
#: ZLib::kMaxUncompressedBytes (util/net_http/compression/gzip_zlib.h), 100 MB.
MAX_INFLATED_BYTES = 100 * 1024 * 1024
#: Seconds a connection may stay open without sending a complete request (half-sent headers
#: included) and seconds a request may take to send its body; then it is closed / answered 408.
IDLE_TIMEOUT_S = 30.0
BODY_TIMEOUT_S = 60.0


#: Open connections the REST port accepts at once; more are closed on arrival, so slow or idle
#: clients can never use up the process's file descriptors (which gRPC needs too).
def _max_connections() -> int:
    """A quarter of the process's file-descriptor limit, between 16 and 1024.

    `resource` exists on POSIX only; on Windows (no such limit to read) the answer is 256.
    """
    try:
        import resource
    except ImportError:
        return 256
    try:
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):
        return 256
    if soft_limit == resource.RLIM_INFINITY or soft_limit <= 0:
        return 1024
    return max(16, min(1024, soft_limit // 4))


MAX_CONNECTIONS = _max_connections()
#: A version in a path is an int64: more digits than this cannot be one.
_MAX_VERSION_DIGITS = 19
#: Message of a Session run cut by --rest_api_timeout_in_ms (TensorFlow's DirectSession).
TIMEOUT_MESSAGE = SESSION_RUN_TIMEOUT_MESSAGE
#: Seconds past --rest_api_timeout_in_ms after which a call still busy outside TensorFlow
#: (TensorFlow itself stops at the deadline) is answered 504 without waiting for it.
BACKSTOP_S = 1.0
_INT64_MAX = 2**63 - 1
#: The Content-Type of every REST answer, exactly as TF Serving writes it.
JSON_CONTENT_TYPE = "application/json"

#: Route kind -> `api` name for metrics.record_request (the contract's names).
_METRICS_API = {
    "predict": "predict",
    "classify": "classify",
    "regress": "regress",
    "metadata": "get_model_metadata",
    "status": "get_model_status",
}


def _invalid(message: str) -> ServingError:
    return json_tensors.rest_error(grpc.StatusCode.INVALID_ARGUMENT, message)


@dataclass(frozen=True)
class Route:
    """What a REST request asks for: a kind (predict, classify, regress, metadata, status)."""

    kind: str
    model_name: str
    version: int | None = None
    label: str | None = None


def parse_route(method: str, path: str) -> Route:
    """Method and raw URL path -> Route, or TF Serving's 400 (`Malformed request: ...`)."""
    malformed = _invalid(f"Malformed request: {method} {path}")
    if method == "POST":
        match = PREDICTION_PATH.fullmatch(path)
        if match is None:
            raise malformed
        name, version_text, label, verb = match.groups()
    elif method == "GET":
        match = STATUS_PATH.fullmatch(path)
        if match is None:
            raise malformed
        name, version_text, label, subresource = match.groups()
        verb = "metadata" if subresource == "metadata" else "status"
    else:
        raise malformed
    version = None
    if version_text:
        # absl::SimpleAtoi refuses what does not fit an int64 (checked on the length first, so a
        # version of thousands of digits costs nothing). TF Serving answers this one with an empty
        # body; a JSON error says more and is what every other 400 carries.
        if len(version_text.lstrip("0")) > _MAX_VERSION_DIGITS or int(version_text) > _INT64_MAX:
            raise _invalid(f"Failed to convert version: {version_text} to numeric.")
        version = int(version_text)
    # curl_easy_unescape: %XX becomes that byte, whatever it is (kept as a surrogate escape).
    name = unquote(name or "", errors="surrogateescape")
    label = unquote(label, errors="surrogateescape") if label else None
    # The verb matched case-insensitively, but only the lowercase spelling is dispatched.
    if verb not in _METRICS_API:
        raise malformed
    if version is not None and label is not None:
        raise _invalid(
            f"Both model version ({version}) and model version label ({label}) cannot be supplied."
        )
    if not name:
        raise _invalid("Missing model name in request.")
    return Route(verb, name, version, label)


def status_json(response: Any) -> str:
    """A GetModelStatusResponse as TF Serving prints it (every field, `error_code: "OK"` too)."""
    from google.protobuf import json_format

    for version_status in response.model_version_status:
        version_status.status.SetInParent()
    text = json_format.MessageToJson(response, indent=1, always_print_fields_with_no_presence=True)
    return text + "\n"


def metadata_json(servable: Any) -> str:
    """The metadata response: `{"model_spec": ..., "metadata": {"signature_def": ...}}`.

    TF Serving prints the two parts separately (proto field names, every field) and joins them
    by hand; the layout below is the same, so the text matches too.
    """
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2

    spec = model_pb2.ModelSpec(name=servable.name)
    spec.version.value = servable.version
    signatures = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in servable.signature_defs.items():
        signatures.signature_def[key].CopyFrom(signature)
    options = {
        "indent": 1,
        "preserving_proto_field_name": True,
        "always_print_fields_with_no_presence": True,
    }
    spec_text = json_format.MessageToJson(spec, **options) + "\n"
    signature_text = json_format.MessageToJson(signatures, **options) + "\n"
    return f'{{\n"model_spec":{spec_text},\n"metadata": {{"signature_def": {signature_text}}}\n}}\n'


class RestApi:
    """The request handling, independent of the HTTP server: Route + body -> JSON text.

    Every method runs in a worker thread (it parses JSON and runs the model), on the call path
    it shares with gRPC (`calls`): the deadline reaches the Session run, errors map to TF
    Serving's status and the metrics count the call, once.
    """

    def __init__(self, core: Any, serving_metrics: metrics.ServingMetrics) -> None:
        self.core = core
        self.metrics = serving_metrics
        self.calls = Calls(core, "REST", serving_metrics)

    def handle(self, route: Route, body: bytes, deadline: Deadline = NO_DEADLINE) -> str:
        """Answer one request (raises ServingError), counted once in the metrics."""
        return self.calls.serve(
            _METRICS_API[route.kind],
            route.model_name,
            lambda: self._answer(route, body, deadline),
        )

    def _answer(self, route: Route, body: bytes, deadline: Deadline) -> str:
        """TF Serving's order of checks: JSON first, then the model."""
        if route.kind == "status":
            # TF Serving's GetModelStatus looks at the version only; a label in the path is ignored.
            return status_json(self.core.status(route.model_name, route.version, None))
        target = Target(route.model_name, route.version, route.label)
        if route.kind == "metadata":
            return metadata_json(self.calls.servable(target))
        remaining = deadline.remaining()
        if remaining is not None and remaining <= 0:
            raise deadline_exceeded()  # queued past its deadline (see _dispatch): not read
        doc = json_tensors.parse_request(
            body, None if remaining is None else max(0.0, remaining), dense=route.kind == "predict"
        )
        target = Target(
            route.model_name, route.version, route.label, json_tensors.signature_name_of(doc)
        )
        if route.kind == "predict":
            return self._predict(target, doc, body, deadline)
        request_input = json_tensors.examples_input(doc)
        _, result = self.calls.examples(route.kind, target, request_input, deadline=deadline)
        if route.kind == "classify":
            return json_tensors.classify_response(result)
        return json_tensors.regress_response(result)

    def _predict(self, target: Target, doc: dict, body: bytes, deadline: Deadline) -> str:
        servable = self.calls.servable(target)
        key = target.signature_name or DEFAULT_SIGNATURE
        signature = servable.signature_defs.get(key)
        if signature is None:
            raise _invalid(f'Serving signature name: "{key}" not found in signature def')
        input_types = {alias: info.dtype for alias, info in signature.inputs.items()}
        if not input_types:
            raise _invalid(
                f"Failed to get input map for signature: {target.signature_name or 'DEFAULT'}"
            )
        has_booleans = b"true" in body or b"false" in body
        inputs, row_format = json_tensors.predict_inputs(
            doc, input_types, has_booleans=has_booleans
        )
        _, outputs = self.calls.predict(target, inputs, deadline=deadline, servable=servable)
        return json_tensors.predict_response(outputs, row_format)


class RestServer:
    """aiohttp on its own event loop and thread; `stop()` lets requests in flight finish."""

    def __init__(
        self,
        core: Any,
        host: str,
        port: int,
        *,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
        monitoring_path: str | None = None,
        num_threads: int | None = None,
        serving_metrics: metrics.ServingMetrics | None = None,
        idle_timeout: float = IDLE_TIMEOUT_S,
        body_timeout: float = BODY_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.host = host
        self.idle_timeout = idle_timeout
        self.body_timeout = body_timeout
        self.max_connections = max_connections
        self.requested_port = port
        self.timeout_ms = timeout_ms if timeout_ms and timeout_ms > 0 else None
        self.timeout = self.timeout_ms / 1000 if self.timeout_ms else None
        self.monitoring_path = monitoring_path
        self.metrics = serving_metrics or metrics.default_metrics()
        model_names = getattr(core, "model_names", None)
        if model_names is not None:
            self.metrics.label_models_by(model_names)
        self.api = RestApi(core, self.metrics)
        # TF Serving's default: --rest_api_num_threads = 4 x the number of cores.
        workers = num_threads or 4 * (os.cpu_count() or 1)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rest-worker")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self.port: int = port

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> RestServer:
        """Bind and serve; returns once listening, or raises the binding error (OSError)."""
        self._thread = threading.Thread(target=self._run, name="rest-server", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            self._thread.join()
            self._executor.shutdown(wait=False)
            raise self._start_error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._open())
        except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
            self._start_error = exc
            loop.close()
            self._started.set()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _open(self) -> None:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_route("*", "/{path:.*}", self._dispatch)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            # A connection that has not sent a whole request in this time is closed; aiohttp
            # starts this clock when the connection opens, so half-sent headers count too.
            keepalive_timeout=self.idle_timeout,
            lingering_time=2.0,
            # Bodies are inflated here, with a cap (TF Serving's), not without limit by aiohttp.
            auto_decompress=False,
        )
        await runner.setup()
        site = _BoundedSite(
            runner,
            self.host,
            self.requested_port,
            shutdown_timeout=5.0,
            max_connections=self.max_connections,
        )
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        if runner.addresses:
            self.port = runner.addresses[0][1]

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening, let requests in flight finish (up to `timeout`), then end the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        if self._runner is not None:
            future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop)
            try:
                future.result(timeout)
            except Exception:  # noqa: BLE001 - stopping anyway
                log.warning("REST server did not stop cleanly within %.0f s", timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._executor.shutdown(wait=False, cancel_futures=True)
        json_document.stop_parser_process()

    def __enter__(self) -> RestServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ requests
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.rel_url.raw_path
        if self.monitoring_path is not None and path == self.monitoring_path:
            return web.Response(
                body=self.metrics.render(), headers={"Content-Type": metrics.CONTENT_TYPE}
            )
        if not API_PATH.fullmatch(path):
            raise web.HTTPNotFound()
        try:
            body = await asyncio.wait_for(_read_body(request), self.body_timeout)
        except asyncio.TimeoutError:
            response = self._error_response(
                ServingError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"Timed out reading the request body after {self.body_timeout:g} s",
                ),
                status=408,
            )
            response.force_close()
            return response
        except ServingError as err:
            response = self._error_response(err)
            response.force_close()  # the rest of the body is not read
            return response
        started = time.monotonic()
        try:
            route = parse_route(request.method, path)
        except ServingError as err:
            return self._error_response(err)
        loop = asyncio.get_running_loop()
        try:
            if "gzip" in request.headers.get("Content-Encoding", ""):
                body = await loop.run_in_executor(self._executor, inflate, body)
        except ServingError as err:
            return self._error_response(err)
        inference = route.kind in ("predict", "classify", "regress")
        # --rest_api_timeout_in_ms bounds the Session run (RunOptions.timeout_in_ms, as in
        # http_rest_api_handler.cc). One deliberate difference: TF Serving counts it from the
        # start of the run, this server from the request's arrival, so time queued for a worker
        # or parsing JSON is part of it; the client has its 504 by the deadline (plus
        # BACKSTOP_S), and a call still queued then is failed unread rather than run for no one.
        deadline = Deadline.after_ms(self.timeout_ms if inference else None, start=started)
        call = loop.run_in_executor(self._executor, self.api.handle, route, body, deadline)
        try:
            # The answer comes from the call itself (TensorFlow stops the run at the deadline).
            # Past the deadline by BACKSTOP_S, work that is not a Session run (JSON, for one) is
            # still going: the client gets its 504 now; the call is counted when it ends.
            remaining = deadline.remaining()
            backstop = None if remaining is None else max(0.0, remaining) + BACKSTOP_S
            text = await asyncio.wait_for(asyncio.shield(call), backstop)
        except asyncio.TimeoutError:
            error = deadline_exceeded()
        except ServingError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - every failure becomes a JSON error
            error = to_serving_error(exc)
        else:
            return _json_response(text, 200)
        return self._error_response(error)

    @staticmethod
    def _error_response(error: ServingError, status: int | None = None) -> web.Response:
        return _json_response(json_tensors.error_json(error.message), status or error.http_status)


async def _read_body(request: web.Request) -> bytes:
    """The raw body (not inflated), refused past MAX_BODY_BYTES."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _invalid(f"The request body is larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


#: One gzip body is inflated at a time: each may take up to MAX_INFLATED_BYTES of memory, so
#: a handful of gzip bombs sent together would otherwise hold several times that at once.
_INFLATING = threading.BoundedSemaphore(1)


#: Bytes inflated per step while a gzip body is measured.
_INFLATE_STEP = 1 << 20


def inflate(body: bytes, limit: int = MAX_INFLATED_BYTES) -> bytes:
    """A `Content-Encoding: gzip` body, inflated to at most `limit` bytes (TF Serving's cap).

    The body is inflated twice: first a step at a time, only to measure it (each step is
    dropped, so a gzip bomb is refused having held one step), then into a buffer of exactly that
    size. Kept while measuring, the steps of each bomb stayed in the allocator of the thread that
    inflated it: the server grew by the cap for every worker thread that met one.
    """
    try:
        with _INFLATING:
            size = _inflated_size(body, limit)
            return zlib.decompress(body, wbits=31, bufsize=max(1, size))
    except zlib.error as exc:
        raise _invalid(f"Failed to uncompress the gzip request body: {exc}") from None


def _inflated_size(body: bytes, limit: int) -> int:
    inflater = zlib.decompressobj(wbits=31)
    size = 0
    pending = body
    while not inflater.eof:
        step = len(inflater.decompress(pending, _INFLATE_STEP))
        pending = inflater.unconsumed_tail
        if not step and not pending:
            break  # nothing more comes out, and the stream has not ended
        size += step
        if size > limit:
            raise _invalid(
                f"The gzip request body inflates to more than {limit} bytes; "
                "send it uncompressed or split the request"
            )
    if not inflater.eof:
        raise _invalid("Failed to uncompress the gzip request body: it ends before its last block")
    return size


class _BoundedSite(web.TCPSite):
    """A TCPSite that closes connections beyond `max_connections` as they arrive."""

    def __init__(self, *args: Any, max_connections: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_connections = max_connections

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None

        def protocol() -> asyncio.BaseProtocol:
            if len(server.connections) >= self._max_connections:
                return _Refuse()
            return server()

        self._server = await asyncio.get_running_loop().create_server(
            protocol,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


class _Refuse(asyncio.Protocol):
    """A connection over the limit: closed at once, nothing logged."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


def _json_response(text: str, status: int) -> web.Response:
    """A response as TF Serving sends it: `Content-Type: application/json` exactly (AddHeaders in
    http_rest_api_util.cc; aiohttp would add `; charset=utf-8`), and the bytes of the text as
    they are, so a string quoted from a body that was not UTF-8 comes back unchanged."""
    return web.Response(
        body=text.encode("utf-8", "surrogateescape"),
        status=status,
        headers={"Content-Type": JSON_CONTENT_TYPE},
    )


def start_rest_server(
    core: Any,
    host: str,
    port: int,
    *,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
    monitoring_path: str | None = None,
    num_threads: int | None = None,
    serving_metrics: metrics.ServingMetrics | None = None,
    **limits: Any,
) -> RestServer:
    """Start the REST API for a ServerCore `core` on host:port (0 = a free port; see `.port`).

    Returns a running `RestServer`; `.stop()` shuts it down gracefully. A port that cannot be
    bound raises OSError here, before the caller reports the server as ready. `limits`:
    `idle_timeout`, `body_timeout` (seconds) and `max_connections` (see RestServer).
    """
    return RestServer(
        core,
        host,
        port,
        timeout_ms=timeout_ms,
        monitoring_path=monitoring_path,
        num_threads=num_threads,
        serving_metrics=serving_metrics,
        **limits,
    ).start()
