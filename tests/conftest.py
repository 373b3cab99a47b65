"""Session fixtures for real NATS and MongoDB: from the environment, Docker, or embedded."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sarafan.embedded import LOCALHOST, Child, ChildExited, free_port, mongo_child, nats_child
from sarafan.ports import PORT_RANGE, port_range
from tests import properties, query_plans

# The Hypothesis profiles (`make unit` selects `unit` with `--hypothesis-profile=unit`), here so
# that they exist before pytest loads the one asked for.
properties.register_profiles()

# The ports this session's servers listen on come from its own slice of a range below the OS's
# ephemeral ports (32768-60999 on Linux, where every outgoing connection takes its local port):
# neither another pytest-xdist worker nor a connection can take one between its pick and its
# bind. Set here, before any port is picked, so the processes tests start (`sarafan up`)
# inherit it; a range given in the environment is sliced instead.
TEST_PORTS = range(20000, 32000)


def worker_ports(ports: range, worker: str | None, workers: str | None) -> str:
    """The `low-high` slice of `ports` for pytest-xdist worker `worker` (`gw1`) of `workers`;
    the whole of it outside xdist."""
    count = int(workers or 1)
    index = int((worker or "gw0").removeprefix("gw")) % count
    size = len(ports) // count
    first = ports[0] + index * size
    return f"{first}-{first + size - 1}"


os.environ[PORT_RANGE] = worker_ports(
    port_range() or TEST_PORTS,
    os.environ.get("PYTEST_XDIST_WORKER"),
    os.environ.get("PYTEST_XDIST_WORKER_COUNT"),
)

# Every MongoDB client created from here on reports its commands to the query-plan recorder,
# whose test (tests/integration/test_query_plans.py) runs last and fails on a full scan.
query_plans.install()

# Real servers always: the URL given in the environment, a container when Docker is asked
# for, else the embedded executables (nats-server, nx-27017) as children of this session.
USE_DOCKER = os.environ.get("SARAFAN_TEST_DOCKER") == "1"
NATS_IMAGE = "nats:2.12.1"
MONGO_IMAGE = "mongo:8.0"


class EmbeddedServer:
    """A server process this session owns, restartable on the same port and data dir."""

    def __init__(self, child: Child, url: str, ready_timeout: float = 30.0) -> None:
        child.die_with_parent = True  # a killed pytest run must not leave servers behind
        self.child = child
        self.url = url
        self.ready_timeout = ready_timeout

    @property
    def running(self) -> bool:
        return self.child.alive()

    def start(self) -> None:
        """Start and return once the server answers (JetStream healthy, or a Mongo ping)."""
        self.child.start()
        self.child.wait_ready(self.ready_timeout)

    def stop(self) -> None:
        """Graceful stop (SIGTERM, then SIGKILL after 10 s)."""
        self.child.stop()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.child.kill()

    def ensure_running(self) -> None:
        if not self.child.alive():
            self.start()


def started_on_free_ports(make: Callable[[], EmbeddedServer], attempts: int = 3) -> EmbeddedServer:
    """A server made by `make` (which picks its ports with `free_port`) and started. A port
    free when picked may be taken before the child binds it (another test's server, or a
    connection's ephemeral port): the child then exits at once, and a new one on new ports is
    made, up to `attempts` times."""
    for attempt in range(1, attempts + 1):
        server = make()
        try:
            server.start()
            return server
        except ChildExited:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


def _external_reason(env_var: str) -> str | None:
    if os.environ.get(env_var):
        return f"{env_var} points at an external server this session cannot stop"
    if USE_DOCKER:
        return "SARAFAN_TEST_DOCKER=1: stopping the server is only supported for embedded ones"
    return None


@pytest.fixture(scope="session")
def _embedded_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    data_dir: Path = tmp_path_factory.mktemp("nats")

    def make() -> EmbeddedServer:
        port = free_port()
        return EmbeddedServer(nats_child(data_dir, port, free_port()), f"nats://{LOCALHOST}:{port}")

    server = started_on_free_ports(make)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _embedded_mongo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    data_dir: Path = tmp_path_factory.mktemp("mongo")

    def make() -> EmbeddedServer:
        port = free_port()
        return EmbeddedServer(mongo_child(data_dir, port), f"mongodb://{LOCALHOST}:{port}")

    server = started_on_free_ports(make)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def nats_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a JetStream-enabled NATS server shared by the whole session."""
    if os.environ.get("NATS_URL"):
        yield os.environ["NATS_URL"]
    elif USE_DOCKER:
        from testcontainers.nats import NatsContainer

        with NatsContainer(NATS_IMAGE).with_command("-js") as container:
            host = container.get_container_host_ip()
            yield f"nats://{host}:{container.get_exposed_port(4222)}"
    else:
        yield request.getfixturevalue("_embedded_nats").url


@pytest.fixture(scope="session")
def mongo_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a MongoDB (or nx-27017) server shared by the whole session."""
    if os.environ.get("MONGODB_URL"):
        yield os.environ["MONGODB_URL"]
    elif USE_DOCKER:
        from testcontainers.mongodb import MongoDbContainer

        with MongoDbContainer(MONGO_IMAGE) as container:
            yield container.get_connection_url()
    else:
        yield request.getfixturevalue("_embedded_mongo").url


@pytest.fixture
def nats_server(request: pytest.FixtureRequest) -> Iterator[EmbeddedServer]:
    """The session's embedded nats-server, for tests that take NATS down and back up.

    Same port and store dir across restarts, so `nats_url` stays valid; running again
    after the test even when the test failed mid-outage.
    """
    reason = _external_reason("NATS_URL")
    if reason:
        pytest.skip(reason)
    server: EmbeddedServer = request.getfixturevalue("_embedded_nats")
    server.ensure_running()
    yield server
    server.ensure_running()


@pytest.fixture
def mongo_server(request: pytest.FixtureRequest) -> Iterator[EmbeddedServer]:
    """The session's embedded nx-27017, for tests that take MongoDB down and back up."""
    reason = _external_reason("MONGODB_URL")
    if reason:
        pytest.skip(reason)
    server: EmbeddedServer = request.getfixturevalue("_embedded_mongo")
    server.ensure_running()
    yield server
    server.ensure_running()


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list
) -> None:
    """The query-plan test runs after everything else: it checks what the suite recorded."""
    last = [i for i in items if i.module.__name__.endswith("test_query_plans")]
    items[:] = [i for i in items if i not in last] + last


# -- the memory emulator mirrored on nx-27017 (tests/fakes/mirror.py) -----------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--mirror-memory",
        action="store_true",
        help="run every call the fast tests make on the memory emulator on nx-27017 too, and "
        "fail on any difference (also SARAFAN_MIRROR_MEMORY=1; the server is `mongo_url`)",
    )


@pytest.fixture(scope="session", autouse=True)
def _mirror_memory(request: pytest.FixtureRequest) -> Iterator[None]:
    from tests.fakes import mirror

    if not mirror.wanted(request.config.getoption("--mirror-memory")):
        yield
        return
    mirror.start(request.getfixturevalue("mongo_url"))
    try:
        yield
    finally:
        mirror.stop()


@pytest.fixture(autouse=True)
def _mirror_memory_check(_mirror_memory: None) -> Iterator[None]:
    """Under the mirror: each test's collections compared whole at its end, its databases
    dropped, and the test failed on any mismatch (even one the code under test swallowed)."""
    from tests.fakes import mirror

    yield
    running = mirror.active()
    if running is not None:
        found = running.finish_test()
        if found:
            pytest.fail("\n\n".join(found), pytrace=False)
