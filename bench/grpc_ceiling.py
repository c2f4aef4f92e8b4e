"""gRPC's ceiling: a grpc.aio server that parses each ModelInfer request and answers a constant.

    GRPC_PORT=8081 python -m bench.grpc_ceiling

What any ModelInfer service on grpcio cannot avoid, and nothing else: the server built as the
service's ``GrpcServer`` builds it (the same options, on a uvloop event loop as under uvicorn),
the service's own stubs (``service.grpc_api.grpc_predict_v2_pb2_grpc``), so grpcio parses the
request into a ``ModelInferRequest`` and serializes the answer as for the service; the answer
is one message built once: the service's answer to one Iris row (``probabilities`` FP32
``[1, 3]`` and ``label`` BYTES ``[1]`` as raw_output_contents), as many bytes as the service
sends to bench/grpc_load.py's request. No data plane, no metadata, no access log, no metrics.

ServerLive, ServerReady and ModelReady answer true (bench/servers.py's ``Server(http=False)``
waits for ServerReady); no HTTP port. Settings from the environment as the service reads them
(HOST, GRPC_PORT, MAX_BODY_BYTES, WORKERS). SIGTERM or SIGINT stop it at once.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import struct
import sys
from typing import Any

import grpc
import uvloop

from service.grpc_api import grpc_predict_v2_pb2 as pb
from service.grpc_api import grpc_predict_v2_pb2_grpc as pb_grpc
from service.settings import Settings

MODEL = "iris"
# The same row's answer as bench/ceiling_app.py's, in the service's gRPC encoding: the model's
# version as a string, the request's id (bench/grpc_load.py sends "bench"), the label as BYTES
# (a 4-byte little-endian length, then the bytes).
PROBABILITIES = (0.9793245792388916, 0.02057075686752796, 0.00010466784442542121)
LABEL = b"setosa"


def constant_answer(model: str = MODEL, version: str = "1", request_id: str = "bench") -> Any:
    """The ModelInferResponse every ModelInfer call gets."""
    answer = pb.ModelInferResponse(model_name=model, model_version=version, id=request_id)
    answer.outputs.add(name="probabilities", datatype="FP32", shape=[1, len(PROBABILITIES)])
    answer.outputs.add(name="label", datatype="BYTES", shape=[1])
    answer.raw_output_contents.append(struct.pack(f"<{len(PROBABILITIES)}f", *PROBABILITIES))
    answer.raw_output_contents.append(struct.pack("<I", len(LABEL)) + LABEL)
    return answer


ANSWER = constant_answer()


class CeilingServicer(pb_grpc.GRPCInferenceServiceServicer):
    """ModelInfer: the request parsed by grpcio, the answer a constant; readiness: true."""

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        return pb.ModelReadyResponse(ready=True)

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        return ANSWER


def make_server(settings: Settings) -> grpc.aio.Server:
    """A grpc.aio server with service.grpc_api.server.GrpcServer's options."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(CeilingServicer(), server)
    return server


async def serve(settings: Settings) -> None:
    address = f"{settings.host}:{settings.grpc_port}"
    server = make_server(settings)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if not port:
        raise SystemExit(f"cannot listen for gRPC on {address}")
    await server.start()
    print(f"gRPC ceiling listening on {address}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(None)


def main() -> int:
    settings = Settings()
    if not settings.grpc_port:
        print("set GRPC_PORT to the port to serve on", file=sys.stderr)
        return 2
    gc.collect()  # as service.__main__.freeze_imports: the imports out of garbage collection
    gc.freeze()
    uvloop.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
