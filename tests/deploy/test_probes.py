"""Every authz container's probes: liveness needs the process to answer, readiness SERVING.

Static checks of the rendered manifests; what the probes do against a real
process is in tests/service/test_service_probe.py (a stopped process fails
liveness), test_sidecar_topology.py and test_rolling_update.py (the manifests'
own commands, run here).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.config.loader import parse_config
from authz.server import SERVICE_NAME
from tests.deploy.manifests import (
    K8S,
    Obj,
    config_arg,
    container,
    containers,
    find,
    mounted_file,
    objects_of,
    render,
)
from tests.deploy.test_manifests import OBSERVABILITY, RENDERED, authz_config_text, rendered


def serving_containers(objects: tuple[Obj, ...]) -> list[tuple[Obj, Obj]]:
    """(workload, container) for every container that runs ``authz serve``."""
    return [
        (workload, entry)
        for workload in objects_of(objects, "Deployment")
        for entry in containers(workload)
        if entry.get("args", [])[:1] == ["serve"]
    ]


def loopback_target(listen: str) -> str:
    """Where a probe inside the container reaches a server listening on ``listen``."""
    if listen.startswith("unix:"):
        return listen
    return f"127.0.0.1:{listen.rsplit(':', 1)[1]}"


@pytest.mark.parametrize("directory", RENDERED, ids=lambda p: p.name)
def test_no_liveness_probe_is_a_tcp_connect(directory: Path) -> None:
    # The kernel completes a TCP handshake for a stopped or wedged process, so a
    # tcpSocket liveness probe would never restart it.
    for workload in objects_of(render(directory), "Deployment"):
        for entry in containers(workload):
            where = f"{workload['metadata']['name']}/{entry['name']}"
            assert "tcpSocket" not in entry.get("livenessProbe", {}), where


@pytest.mark.parametrize(
    "directory",
    [K8S / "base", K8S / "gateway", K8S / "sidecar", K8S / "istio", OBSERVABILITY],
    ids=lambda p: p.name,
)
def test_authz_liveness_needs_an_answer_of_any_status_and_readiness_needs_serving(
    directory: Path,
) -> None:
    objects = render(directory)
    served = serving_containers(objects)
    assert served, "no authz serve container"
    for workload, entry in served:
        where = f"{directory.name}: {workload['metadata']['name']}/{entry['name']}"
        listen = parse_config(
            mounted_file(objects, workload, entry["name"], config_arg(entry))
        ).listen
        liveness = entry["livenessProbe"]
        command = liveness["exec"]["command"]
        # Any answer, even NOT_SERVING: an identity provider outage must not
        # restart the pod and throw away its last good keys.
        assert command[:4] == ["python", "-m", "authz.probe", "--alive"], where
        assert command[-1] == loopback_target(listen), where
        # The probe gives up on its own, with time to start Python, before the
        # kubelet's timeout would cut it off.
        answer_within = float(command[command.index("--timeout") + 1])
        assert answer_within + 1 <= liveness["timeoutSeconds"], where
        readiness = entry["readinessProbe"]
        if "grpc" in readiness:
            assert readiness["grpc"]["service"] == SERVICE_NAME, where
            assert str(readiness["grpc"]["port"]) == listen.rsplit(":", 1)[1], where
        else:
            ready_command = readiness["exec"]["command"]
            assert ready_command[:3] == ["python", "-m", "authz.probe"], where
            assert "--alive" not in ready_command, where
            assert ready_command[-1] == loopback_target(listen), where


def test_probes_use_grpc_health_for_readiness() -> None:
    authz = container(find(rendered("gateway"), "Deployment", "authz"), "authz")
    assert authz["readinessProbe"]["grpc"] == {"port": 9001, "service": SERVICE_NAME}
    # In the sidecar the socket is a file: every probe runs inside the container.
    sidecar = container(find(rendered("sidecar"), "Deployment", "gateway"), "authz")
    socket_path = parse_config(authz_config_text("sidecar", "gateway")).listen
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = sidecar[probe]["exec"]["command"]
        assert command[:3] == ["python", "-m", "authz.probe"]
        assert command[-1] == socket_path
    assert "--alive" not in sidecar["startupProbe"]["exec"]["command"]
