"""Generates the helloworld stubs with grpc_tools.protoc into a fresh temporary directory
and imports them; shared by greeter_server.py and greeter_client.py, so no generated code
is kept in the repository (and two processes never share a half-written stub)."""
import importlib
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def load():
    """Returns (helloworld_pb2, helloworld_pb2_grpc)."""
    import grpc_tools
    from grpc_tools import protoc  # grpcio-tools

    out = tempfile.mkdtemp(prefix="helloworld-stubs-")
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{HERE}",
            f"-I{include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            os.path.join(HERE, "helloworld.proto"),
        ]
    )
    if code != 0:
        sys.exit(f"grpc_tools.protoc failed ({code})")
    sys.path.insert(0, out)
    try:
        return (
            importlib.import_module("helloworld_pb2"),
            importlib.import_module("helloworld_pb2_grpc"),
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)
