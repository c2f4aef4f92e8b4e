"""Metrics, JSON logs, request ids and overload protection; no FastAPI imports here.

The data plane (``service.dataplane``) reports each inference and its predictions to
:class:`metrics.Metrics`; the registry reports loads, swaps and model calls to
:class:`metrics.ModelMetrics`; the request middleware counts and logs every HTTP request.
"""
