"""Each protocol as a codec: its request to a feature matrix, the probabilities to its answer.

No HTTP and no transport here: the REST routes (``service.api``) and the gRPC service
(``service.grpc_api``) hand these codecs to the data plane (``service.dataplane``).
"""
