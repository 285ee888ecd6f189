"""The demo's Dagster processes, laid out as in production: a code server, a webserver, a daemon.

The webserver and the daemon could each load the code location themselves (a `python_module`
workspace), but then the daemon replaces its private code server every 60 seconds and the old
one logs "No heartbeat received … shutting down" as it goes, and every new one imports the code
again. One `dagster code-server start` that both connect to over gRPC loads the code once, stays
up, and still reloads from the UI's "Reload" button.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from billing_demo.dev.services import Service, ServiceError, script
from billing_pipeline import config
from billing_pipeline.db.engine import make_engine, render_url

DAGSTER_DATABASE = "dagster"
LOCATION_NAME = "billing_pipeline"
DEFINITIONS_MODULE = "billing_pipeline.definitions"
CODE_SERVER = "dagster-code-server"


def dagster_storage_url(app_url: str) -> str:
    """Dagster's own database: `DAGSTER_PG_URL` if set, else `dagster` on the same server.

    Dagster keeps its own `alembic_version` table, so it cannot share the application database.
    """
    if url := config.env(config.DAGSTER_PG_URL):
        return render_url(url)
    url = render_url(make_url(app_url).set(database=DAGSTER_DATABASE))
    admin = make_engine(app_url, pool_size=1).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            exists = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": DAGSTER_DATABASE}
            ).scalar()
            if not exists:
                connection.execute(text(f'CREATE DATABASE "{DAGSTER_DATABASE}"'))
    except Exception as error:
        raise ServiceError(
            f"could not create the `{DAGSTER_DATABASE}` database for Dagster's storage "
            f"({type(error).__name__}); create one and set {config.DAGSTER_PG_URL}."
        ) from error
    finally:
        admin.dispose()
    return url


def prepare_dagster_home(template: Path) -> Path:
    """DAGSTER_HOME with a dagster.yaml: the repo's template, unless the user brought their own.

    The default home is re-rendered on every start so edits to the template take effect.
    """
    if home := config.env(config.DAGSTER_HOME):
        path = Path(home).resolve()
        path.mkdir(parents=True, exist_ok=True)
        if not (path / "dagster.yaml").exists():
            shutil.copyfile(template, path / "dagster.yaml")
        return path
    path = config.data_dir() / "dagster_home"
    path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, path / "dagster.yaml")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now; the code server is internal, so nobody needs to know it."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def grpc_serving(host: str, port: int) -> bool:
    """Whether a Dagster code server answers SERVING on gRPC's standard health service.

    `dagster api grpc` and `dagster code-server start` load the code location before they start
    serving, so SERVING means the webserver and daemon will find it loaded.
    """
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"{host}:{port}") as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="DagsterApi"), timeout=2
            )
        except grpc.RpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def code_server_service(port: int, host: str = "127.0.0.1") -> Service:
    return Service(
        CODE_SERVER,
        [
            script("dagster"),
            "code-server",
            "start",
            "-m",
            DEFINITIONS_MODULE,
            "--location-name",
            LOCATION_NAME,
            "-h",
            host,
            "-p",
            str(port),
        ],
        ready_check=lambda: grpc_serving(host, port),
        port=port,
    )


def write_grpc_workspace(path: Path, port: int, host: str = "127.0.0.1") -> Path:
    """A workspace.yaml that points the webserver and the daemon at the running code server."""
    path.write_text(
        "# Written by `billing-pipeline dev` at every start: the code server it runs.\n"
        "load_from:\n"
        "  - grpc_server:\n"
        f"      host: {host}\n"
        f"      port: {port}\n"
        f"      location_name: {LOCATION_NAME}\n"
    )
    return path


def webserver_and_daemon(workspace: Path, host: str, port: int) -> list[Service]:
    return [
        Service("dagster-daemon", [script("dagster-daemon"), "run", "-w", str(workspace)]),
        Service(
            "dagster-webserver",
            [script("dagster-webserver"), "-w", str(workspace), "-h", host, "-p", str(port)],
            ready_url=f"http://{host}:{port}/server_info",
            port=port,
        ),
    ]
