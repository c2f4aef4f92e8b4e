"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``).

- ``grpc_predict_v2.proto``: the protocol's messages and service (origin and licence in its
  header); ``grpc_predict_v2_pb2*.py`` are generated from it by ``make proto`` and committed.
- ``codec``: protobuf messages to and from the V2 REST documents that service.protocols.v2 parses and
  renders, so that gRPC answers exactly what REST answers.

Nothing is imported here: importing the package loads neither grpcio nor protobuf.
"""
