"""The launcher's ports: chosen where the kernel does not hand out source ports, never twice,
and a port taken between its choice and the child's bind is met by starting on new ports
(issue 40, item 8: a start-up race for free ports)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from integration import processes, service_process, weaviate_server
from integration.processes import PortInUse, free_port, free_port_pair
from integration.service_process import ServiceProcess
from integration.stack import local_cluster
from integration.weaviate_server import ClusterNode, WeaviateServer


def ephemeral_range() -> range:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return range(int(low), int(high) + 1)


def test_free_ports_are_outside_the_ephemeral_range_and_never_handed_out_twice():
    singles = [free_port() for _ in range(300)]
    pairs = [free_port_pair() for _ in range(100)]
    handed_out = singles + pairs + [p + 1 for p in pairs]
    # An outgoing connection's source port is drawn from the ephemeral range: a port chosen
    # there can be taken by any client before the child binds it.
    assert not [p for p in handed_out if p in ephemeral_range()]
    assert len(set(handed_out)) == len(handed_out)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process listens on (here a socket of this one), as if it had taken the
    port after the launcher chose it and before the child bound it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", free_port()))
        holder.listen()
        yield holder.getsockname()[1]


def hand_out_first(monkeypatch, module, name: str, port: int) -> None:
    """``module.name`` (``free_port`` or ``free_port_pair``) answers ``port`` once, as the
    real one would have had the race gone the other way, then chooses ports as usual."""
    real = getattr(processes, name)
    answers = iter([port])
    monkeypatch.setattr(module, name, lambda *args: next(answers, None) or real(*args))


@pytest.mark.integration
def test_service_starts_on_another_port_when_its_port_was_taken(
    tiny_checkpoint, taken_port, monkeypatch, caplog
):
    hand_out_first(monkeypatch, service_process, "free_port", taken_port)
    caplog.set_level(logging.WARNING, logger="integration.processes")
    with ServiceProcess(tiny_checkpoint) as service:
        assert service.port != taken_port
        assert httpx.get(f"{service.url}/.well-known/ready", timeout=10).is_success
    assert "a port was taken" in caplog.text and "address already in use" in caplog.text


@pytest.mark.integration
def test_service_on_a_port_given_by_the_caller_fails_clearly_when_it_is_taken(
    tiny_checkpoint, taken_port
):
    # A port the caller asked for is not moved: clients expect the service there.
    with pytest.raises(PortInUse, match="address already in use"):
        ServiceProcess(tiny_checkpoint, port=taken_port, startup_timeout=120).start()


@pytest.mark.integration
@pytest.mark.parametrize("role", ["http", "grpc", "gossip"])
def test_weaviate_starts_on_other_ports_when_one_was_taken(
    service, taken_port, role, monkeypatch, caplog
):
    if role in ("http", "grpc"):
        # free_port is asked for the HTTP port, then for the gRPC one.
        real = processes.free_port
        answers = iter([real(), taken_port] if role == "grpc" else [taken_port])
        monkeypatch.setattr(weaviate_server, "free_port", lambda: next(answers, None) or real())
    else:
        # ClusterNode.free asks for the gossip pair (gossip, data) first. (A lone node came up
        # with its Raft port held by a listener on 127.0.0.1, so that case is not tried.)
        real = processes.free_port_pair
        answers = iter([taken_port])
        monkeypatch.setattr(
            weaviate_server, "free_port_pair", lambda: next(answers, None) or real()
        )
    caplog.set_level(logging.WARNING, logger="integration.processes")
    with WeaviateServer(service.url, startup_timeout=120) as server:
        node: ClusterNode = server.node
        ports = {server.http_port, server.grpc_port, node.gossip_port, node.raft_port}
        assert taken_port not in ports
        assert httpx.get(f"{server.url}/v1/.well-known/ready", timeout=10).is_success
    assert "a port was taken" in caplog.text


@pytest.mark.integration
def test_cluster_starts_on_other_ports_when_a_members_port_was_taken(
    tiny_checkpoint, taken_port, monkeypatch, caplog
):
    # The first member's gossip port is taken: it cannot move alone (the others were told
    # its ports), so every node is stopped and the cluster started again on new ports.
    hand_out_first(monkeypatch, weaviate_server, "free_port_pair", taken_port)
    caplog.set_level(logging.WARNING, logger="integration.stack")
    with local_cluster(tiny_checkpoint, 2) as cluster:
        gossip = [stack.weaviate.node.gossip_port for stack in cluster.nodes]
        assert taken_port not in gossip
        assert set(cluster.healthy_nodes(1).values()) == {"HEALTHY"}
    assert "starting the 2 nodes again on new ports" in caplog.text
