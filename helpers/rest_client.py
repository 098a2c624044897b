"""TF Serving's REST predict API from Python: URLs, request bodies, answers and errors.

    POST /v1/models/<name>[/versions/<n> | /labels/<label>]:predict

The body is JSON in one of two formats (TF Serving's api_rest.md):

- row format, `{"instances": [...]}`: one entry per example; with several named inputs each
  entry is an object `{"<input>": value, ...}`; the answer is `{"predictions": [...]}`;
- columnar format, `{"inputs": ...}`: one value per input, batch dimension included; the
  answer is `{"outputs": ...}`.

Binary values travel as `{"b64": "<base64>"}`. Both formats may name a `signature_name`.
A failed call answers with an HTTP error status and `{"error": "<message>"}`.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import shlex
from collections.abc import Mapping
from typing import Any

import numpy as np

#: gzip level for compressed request bodies: zlib's default, a fair speed/size trade-off.
GZIP_LEVEL = 6


class RestError(RuntimeError):
    """The server answered a REST call with an error: `status` and the `error` message."""

    def __init__(self, status: int, message: str, url: str) -> None:
        super().__init__(f"HTTP {status} from {url}: {message}")
        self.status = status
        self.message = message
        self.url = url


def predict_url(
    base_url: str,
    model: str,
    *,
    version: int | None = None,
    label: str | None = None,
    verb: str = "predict",
) -> str:
    """`<base>/v1/models/<model>[/versions/<n> | /labels/<label>]:<verb>`."""
    if version is not None and label is not None:
        raise ValueError("give a version or a label, not both: the URL has room for one")
    path = f"{base_url.rstrip('/')}/v1/models/{model}"
    if version is not None:
        path += f"/versions/{int(version)}"
    elif label is not None:
        path += f"/labels/{label}"
    return f"{path}:{verb}"


def row_body(
    instances: Any, *, input_key: str | None = None, signature_name: str | None = None
) -> dict:
    """`{"instances": [...]}`. With `input_key`, each instance becomes `{input_key: value}`."""
    rows = np.asarray(instances).tolist() if isinstance(instances, np.ndarray) else instances
    if input_key is not None:
        rows = [{input_key: row} for row in rows]
    body: dict[str, Any] = {"instances": rows}
    if signature_name is not None:
        body["signature_name"] = signature_name
    return body


def columnar_body(inputs: Mapping[str, Any], *, signature_name: str | None = None) -> dict:
    """`{"inputs": {name: batch, ...}}`: one value per input, batch dimension included."""
    body: dict[str, Any] = {
        "inputs": {
            name: np.asarray(value).tolist() if isinstance(value, np.ndarray) else value
            for name, value in inputs.items()
        }
    }
    if signature_name is not None:
        body["signature_name"] = signature_name
    return body


def b64(data: bytes) -> dict:
    """A binary value as REST JSON carries it: `{"b64": "<standard base64>"}`."""
    return {"b64": base64.b64encode(data).decode("ascii")}


def png_bytes(pixels: np.ndarray) -> bytes:
    """One 28x28 grey-scale image (uint8 0-255) as a PNG file's bytes."""
    from PIL import Image

    image = np.asarray(pixels, dtype=np.uint8).reshape(28, 28)
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def encode_body(body: Mapping[str, Any], *, compress: bool = False) -> tuple[bytes, dict]:
    """The JSON bytes to send and the headers that describe them (gzip when `compress`)."""
    data = json.dumps(body).encode()  # as most clients write it: json.dumps(...) and send
    headers = {"Content-Type": "application/json"}
    if compress:
        data = gzip.compress(data, compresslevel=GZIP_LEVEL)
        headers["Content-Encoding"] = "gzip"
    return data, headers


def decode_answer(payload: bytes | str | Mapping) -> np.ndarray | dict[str, np.ndarray]:
    """`predictions` (row format) or `outputs` (columnar) as float32 arrays.

    One output gives an array; several give a dict of arrays.
    """
    answer = json.loads(payload) if isinstance(payload, bytes | str) else payload
    if "predictions" in answer:
        values = answer["predictions"]
        if values and isinstance(values[0], dict):  # several outputs: one object per instance
            return {k: np.asarray([row[k] for row in values], np.float32) for k in values[0]}
        return np.asarray(values, dtype=np.float32)
    if "outputs" in answer:
        values = answer["outputs"]
        if isinstance(values, dict):
            return {k: np.asarray(v, np.float32) for k, v in values.items()}
        return np.asarray(values, dtype=np.float32)
    raise ValueError(f"expected 'predictions' or 'outputs' in the answer, got {sorted(answer)}")


def post(session, url: str, data: bytes, headers: Mapping[str, str], timeout: float = 10.0):
    """POST and return the answer's bytes; raise RestError with the server's message if it
    answers with an error status."""
    response = session.post(url, data=data, headers=dict(headers), timeout=timeout)
    if response.status_code != 200:
        try:
            message = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            message = response.text
        raise RestError(response.status_code, message, url)
    return response.content


def predict(
    session,
    url: str,
    body: Mapping[str, Any],
    *,
    compress: bool = False,
    timeout: float = 10.0,
) -> np.ndarray | dict[str, np.ndarray]:
    """Send `body` (from `row_body` or `columnar_body`) and decode the answer."""
    data, headers = encode_body(body, compress=compress)
    return decode_answer(post(session, url, data, headers, timeout))


def curl_command(url: str, body_file: str = "body.json", *, compress: bool = False) -> str:
    """The same call as a shell command (the body read from `body_file`)."""
    parts = ["curl", "-s", "-X", "POST", url, "-H", "Content-Type: application/json"]
    if compress:
        parts += ["-H", "Content-Encoding: gzip", "--data-binary", f"@{body_file}.gz"]
    else:
        parts += ["--data-binary", f"@{body_file}"]
    return " ".join(shlex.quote(part) for part in parts)


def rounded_json_instances(images: np.ndarray, decimals: int = 3) -> bytes:
    """The row format with every pixel written with at most `decimals` decimals."""
    rows = np.round(np.asarray(images, dtype=np.float64), decimals).tolist()
    return json.dumps({"instances": rows}).encode()
