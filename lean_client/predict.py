"""Classify MNIST digits with a TensorFlow Serving model, using only grpcio, protobuf and numpy.

    pip install -r lean_client/requirements.txt
    python lean_client/predict.py --server localhost:8500 --model mnist

Prints one predicted digit per line, for the digits in digits.npy (or --digits FILE: uint8
pixels, shape (N, 28, 28) or (N, 28, 28, 1)). Works against `tensorflow/serving` and the
course's embedded server alike: the messages in lean_serving/ have TF Serving's own package,
names and field numbers.

The answer is checked before it is used: a tensor whose shape does not match the bytes that
arrived, or probabilities that are not one row per digit, end with one `error: ...` line on
stderr and exit status 1, never a traceback or a huge allocation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
import numpy as np
from lean_serving import predict_pb2, predict_pb2_grpc, tensor_pb2

HERE = Path(__file__).resolve().parent

#: numpy dtype of each TensorFlow DataType this client reads.
NUMPY_DTYPES = {tensor_pb2.DT_FLOAT: np.float32, tensor_pb2.DT_UINT8: np.uint8}
#: TensorFlow's shorthand "one value fills the tensor" is accepted up to this many elements;
#: beyond it a few bytes from the server could make the client allocate gigabytes.
MAX_FILLED_ELEMENTS = 1 << 20
#: TensorFlow's limit on dimensions (TensorShape::kMaxDimensions).
MAX_DIMS = 254


class BadAnswer(ValueError):
    """The server's answer cannot be what it says it is (sizes that do not add up, ...)."""


def preprocess(pixels: np.ndarray) -> np.ndarray:
    """Raw 0-255 pixels -> float32 in [0, 1], (N, 28, 28, 1): what the model was trained on."""
    pixels = np.asarray(pixels)
    if pixels.ndim == 3:
        pixels = pixels[..., np.newaxis]
    if pixels.ndim != 4 or pixels.shape[1:] != (28, 28, 1):
        raise ValueError(
            f"expected digits of shape (N, 28, 28) or (N, 28, 28, 1), got {pixels.shape}"
        )
    return (pixels.astype(np.float32) / np.float32(255.0)).astype(np.float32)


def encode(array: np.ndarray) -> tensor_pb2.TensorProto:
    """A float32 array as a TensorProto: its shape, and its bytes in tensor_content."""
    array = np.ascontiguousarray(array, dtype="<f4")
    return tensor_pb2.TensorProto(
        dtype=tensor_pb2.DT_FLOAT,
        tensor_shape=tensor_pb2.TensorShapeProto(
            dim=[tensor_pb2.TensorShapeProto.Dim(size=size) for size in array.shape]
        ),
        tensor_content=array.tobytes(),
    )


def decode(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """A TensorProto as a numpy array, whichever field the server filled.

    Sizes are checked against the bytes received before anything is allocated: BadAnswer
    when the shape and the data disagree.
    """
    if proto.dtype not in NUMPY_DTYPES:
        raise BadAnswer(f"this client reads float32 and uint8 tensors, got dtype {proto.dtype}")
    dtype = np.dtype(NUMPY_DTYPES[proto.dtype]).newbyteorder("<")
    shape = [dim.size for dim in proto.tensor_shape.dim]
    if len(shape) > MAX_DIMS or any(size < 0 for size in shape):
        raise BadAnswer(f"the answer's tensor has an impossible shape {shape}")
    count = 1
    for size in shape:  # Python ints: no overflow
        count *= size
    if proto.tensor_content:
        received = len(proto.tensor_content)
        if received != count * dtype.itemsize:
            raise BadAnswer(
                f"the answer's tensor has shape {shape} ({count} values of {dtype.name}, "
                f"{count * dtype.itemsize} bytes) but {received} bytes arrived"
            )
        values = np.frombuffer(proto.tensor_content, dtype=dtype)
    else:
        received = len(proto.float_val)
        if received == 1 and 1 < count <= MAX_FILLED_ELEMENTS:
            values = np.full(count, proto.float_val[0], dtype=dtype)  # TF: one value fills all
        elif received == count:
            values = np.asarray(proto.float_val, dtype=dtype)
        else:
            raise BadAnswer(
                f"the answer's tensor has shape {shape} ({count} values) but {received} "
                "values arrived"
            )
    return values.reshape(shape).astype(dtype.newbyteorder("="))


def classify(
    stub: predict_pb2_grpc.PredictionServiceStub,
    images: np.ndarray,
    *,
    model: str,
    signature: str = "serving_default",
    input_key: str = "image",
    output_key: str = "probabilities",
    timeout: float = 10.0,
) -> np.ndarray:
    """The model's probabilities for `images` (float32 (N, 28, 28, 1) in [0, 1])."""
    request = predict_pb2.PredictRequest(
        model_spec=predict_pb2.ModelSpec(name=model, signature_name=signature)
    )
    request.inputs[input_key].CopyFrom(encode(images))
    response = stub.Predict(request, timeout=timeout)
    if output_key not in response.outputs:
        raise KeyError(
            f"the answer has no output {output_key!r} (it has {sorted(response.outputs)}); "
            "pass --output-key"
        )
    probabilities = decode(response.outputs[output_key])
    if probabilities.ndim != 2 or probabilities.shape[0] != len(images) or not probabilities.size:
        raise BadAnswer(
            f"expected probabilities of shape ({len(images)}, classes) for {len(images)} "
            f"digits, got {list(probabilities.shape)}"
        )
    return probabilities


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="localhost:8500", help="gRPC address, HOST:PORT")
    parser.add_argument("--model", default="mnist", help="model name on the server")
    parser.add_argument("--signature", default="serving_default", help="signature to call")
    parser.add_argument("--input-key", default="image", help="the signature's input name")
    parser.add_argument("--output-key", default="probabilities", help="its output name")
    parser.add_argument("--digits", type=Path, default=HERE / "digits.npy", help=".npy of pixels")
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")
    parser.add_argument(
        "--probabilities", type=Path, help="also save the probabilities to this .npy file"
    )
    args = parser.parse_args(argv)

    try:
        images = preprocess(np.load(args.digits, allow_pickle=False))
    except (OSError, ValueError) as error:
        print(f"error: cannot read the digits in {args.digits}: {error}", file=sys.stderr)
        return 2
    with grpc.insecure_channel(args.server) as channel:
        stub = predict_pb2_grpc.PredictionServiceStub(channel)
        try:
            probabilities = classify(
                stub,
                images,
                model=args.model,
                signature=args.signature,
                input_key=args.input_key,
                output_key=args.output_key,
                timeout=args.timeout,
            )
        except grpc.RpcError as error:
            print(f"Predict failed: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
        except (BadAnswer, KeyError) as error:
            message = error.args[0] if error.args else type(error).__name__
            print(f"error: the server's answer cannot be used: {message}", file=sys.stderr)
            return 1
    if args.probabilities is not None:
        np.save(args.probabilities, probabilities)
    for digit in probabilities.argmax(axis=1):
        print(int(digit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
