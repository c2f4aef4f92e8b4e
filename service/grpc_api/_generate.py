"""Regenerate the Python stubs beside grpc_predict_v2.proto: ``make proto``.

Needs grpcio-tools (the dev extra; its minor is pinned there, as the stubs' version checks follow
it). protoc runs from the repository root with ``-I.``, so the stubs import each other as
``service.grpc_api.grpc_predict_v2_pb2``.

One edit after protoc: the messages are registered in a descriptor pool of their own instead of
protobuf's default pool. tritonclient.grpc (and MLServer, KServe) register messages of the same
names (``inference.ModelInferRequest``, ...) in the default pool, and a second registration of a
name fails on import ("duplicate symbol"), so with the default pool this service and a
tritonclient in the same process (the tests, a caller that embeds both) could not coexist. The wire
format does not depend on the pool: only the package, service, method and field numbers do.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path("service/grpc_api")
PROTO = PACKAGE / "grpc_predict_v2.proto"
STUBS = ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi", "grpc_predict_v2_pb2_grpc.py")

DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
OWN_POOL = (
    "# keras-serve (service/grpc_api/_generate.py): a pool of its own, not the default one, so\n"
    "# that tritonclient.grpc's inference.* messages can be imported in the same process.\n"
    "DESCRIPTOR = _descriptor_pool.DescriptorPool().AddSerializedFile("
)


def generate(out: Path) -> list[Path]:
    """Run protoc into ``out`` (as a root: the stubs land in ``out/service/grpc_api``)."""
    # In a process of its own: grpc_tools' native compiler in a process that has already loaded
    # protobuf's and grpcio's (a test session) has crashed it.
    args = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",  # the dev extra
        "-I.",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(PROTO),
    ]
    code = subprocess.run(args, cwd=ROOT, check=False).returncode
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    stubs = [out / PACKAGE / name for name in STUBS]
    pb2 = stubs[0]
    text = pb2.read_text()
    if text.count(DEFAULT_POOL) != 1:
        raise SystemExit(f"{pb2.name}: protoc's output changed; {DEFAULT_POOL!r} not found once")
    pb2.write_text(text.replace(DEFAULT_POOL, OWN_POOL))
    return stubs


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for stub in generate(Path(tmp)):
            shutil.copyfile(stub, ROOT / PACKAGE / stub.name)
            print(f"wrote {PACKAGE / stub.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
