"""Classify MNIST digits with a TensorFlow Serving model, using only grpcio, protobuf and numpy.

    pip install -r lean_client/requirements.txt
    python lean_client/predict.py --server localhost:8500 --model mnist

Prints one predicted digit per line, for the digits in digits.npy (or --digits FILE: uint8
pixels, shape (N, 28, 28) or (N, 28, 28, 1)). Works against `tensorflow/serving` and the
course's embedded server alike: the messages in lean_serving/ have TF Serving's own package,
names and field numbers.
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
    """A TensorProto as a numpy array, whichever field the server filled."""
    if proto.dtype not in NUMPY_DTYPES:
        raise ValueError(f"this client reads float32 and uint8 tensors, got dtype {proto.dtype}")
    dtype = np.dtype(NUMPY_DTYPES[proto.dtype]).newbyteorder("<")
    shape = [dim.size for dim in proto.tensor_shape.dim]
    if proto.tensor_content:
        values = np.frombuffer(proto.tensor_content, dtype=dtype)
    else:
        values = np.asarray(proto.float_val, dtype=dtype)
        if values.size == 1 and int(np.prod(shape)) > 1:  # TF's shorthand: one value fills all
            values = np.full(int(np.prod(shape)), values[0], dtype=dtype)
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
    return decode(response.outputs[output_key])


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

    images = preprocess(np.load(args.digits))
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
    if args.probabilities is not None:
        np.save(args.probabilities, probabilities)
    for digit in probabilities.argmax(axis=1):
        print(int(digit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
