"""Regenerate the Python modules in lean_serving/ from its .proto files.

Only needed after editing a .proto file, and only here it needs grpcio-tools
(`pip install grpcio-tools`); running the client needs just requirements.txt.

    python lean_client/compile_protos.py [OUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTOS = ("lean_serving/tensor.proto", "lean_serving/predict.proto")


def compile_protos(out_dir: Path = HERE) -> list[Path]:
    """Compile the .proto files into `out_dir`; return the generated files."""
    from grpc_tools import protoc

    out_dir = Path(out_dir)
    (out_dir / "lean_serving").mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{HERE}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}"]
    if protoc.main([*args, *PROTOS]) != 0:
        raise RuntimeError(f"protoc failed on {PROTOS}; read the message above.")
    (out_dir / "lean_serving" / "tensor_pb2_grpc.py").unlink()  # no service in it: empty
    return sorted((out_dir / "lean_serving").glob("*_pb2*.py"))


if __name__ == "__main__":
    for path in compile_protos(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(path)
