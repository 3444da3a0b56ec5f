"""docker-compose.cluster.yml cannot be run here either (see tests/test_compose_file.py): check
that it is the single-node file's Weaviate and service three times over, each node calling its
own service, joined with the cluster settings the local launcher gives its nodes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from integration.weaviate_server import ClusterNode, WeaviateServer
from tests.test_compose_file import CIR, COMPOSE, ROOT, WEAVIATE, load, settings_from, undocumented

CLUSTER = load("docker-compose.cluster.yml")
SERVICES = CLUSTER["services"]
NODES = [SERVICES[f"weaviate-{i}"] for i in (1, 2, 3)]
ENVS = [node["environment"] for node in NODES]

# What makes a node one node of three rather than the single node: set per node here.
PER_NODE = {
    "CLUSTER_HOSTNAME",
    "CLUSTER_JOIN",
    "CLIP_INFERENCE_API",
    "RERANKER_INFERENCE_API",
    "CLUSTER_GOSSIP_BIND_PORT",
    "CLUSTER_DATA_BIND_PORT",
    "RAFT_PORT",
    "RAFT_INTERNAL_RPC_PORT",
    "RAFT_JOIN",
    "RAFT_BOOTSTRAP_EXPECT",
}


def launcher_cluster_variables(data_dir: Path) -> set[str]:
    """The cluster variables ``WeaviateServer`` sets for a member of a 3-node local cluster
    (nothing is started: only its environment is read)."""
    members = [ClusterNode(f"cir-node-{i}", 7100 + 2 * i, 8300 + 2 * i) for i in (1, 2, 3)]
    server = WeaviateServer(
        "http://127.0.0.1:1", node=members[0], cluster=members, data_dir=data_dir
    )
    return {k for k in server.environment() if k.startswith(("CLUSTER_", "RAFT_"))}


def test_each_service_is_the_single_node_service():
    for i in (1, 2, 3):
        assert SERVICES[f"cir-{i}"] == CIR
    assert set(SERVICES) == {f"weaviate-{i}" for i in (1, 2, 3)} | {f"cir-{i}" for i in (1, 2, 3)}


def test_each_node_is_the_single_node_weaviate_but_for_its_place_in_the_cluster():
    same = ("image", "command", "networks", "healthcheck", "restart")
    for node, env in zip(NODES, ENVS, strict=True):
        assert {key: node[key] for key in same} == {key: WEAVIATE[key] for key in same}
        single = {k: v for k, v in WEAVIATE["environment"].items() if k not in PER_NODE}
        assert {k: v for k, v in env.items() if k not in PER_NODE} == single
        assert set(env) - set(single) == PER_NODE


def test_each_node_calls_only_its_own_service():
    port = CIR["environment"]["CIR_PORT"]
    for i, (node, env) in enumerate(zip(NODES, ENVS, strict=True), start=1):
        assert (
            env["CLIP_INFERENCE_API"] == env["RERANKER_INFERENCE_API"] == f"http://cir-{i}:{port}"
        )
        assert node["depends_on"] == {f"cir-{i}": {"condition": "service_healthy"}}


def test_nodes_join_one_cluster_of_three_voters():
    hostnames = [env["CLUSTER_HOSTNAME"] for env in ENVS]
    assert len(set(hostnames)) == 3
    # One Raft membership, every node a voter, each named with its own Raft port.
    assert len({env["RAFT_JOIN"] for env in ENVS}) == 1
    assert ENVS[0]["RAFT_JOIN"] == ",".join(
        f"{h}:{e['RAFT_PORT']}" for h, e in zip(hostnames, ENVS, strict=True)
    )
    assert all(env["RAFT_BOOTSTRAP_EXPECT"] == "3" for env in ENVS)
    for i, env in enumerate(ENVS, start=1):
        # Every other node's gossip port, by its compose service name; never itself.
        gossip = {f"weaviate-{j}:{ENVS[j - 1]['CLUSTER_GOSSIP_BIND_PORT']}" for j in (1, 2, 3)}
        itself = f"weaviate-{i}:{env['CLUSTER_GOSSIP_BIND_PORT']}"
        assert set(env["CLUSTER_JOIN"].split(",")) == gossip - {itself}
        # The pairs the launcher keeps on one host hold here too (ports beside each other).
        assert int(env["CLUSTER_DATA_BIND_PORT"]) == int(env["CLUSTER_GOSSIP_BIND_PORT"]) + 1
        assert int(env["RAFT_INTERNAL_RPC_PORT"]) == int(env["RAFT_PORT"]) + 1


# What only the launcher sets: its nodes share 127.0.0.1, containers have an address each.
ONE_HOST = {"CLUSTER_IN_LOCALHOST", "CLUSTER_BIND_ADDR", "CLUSTER_ADVERTISE_ADDR"}


def test_cluster_variables_are_those_the_local_launcher_sets(tmp_path: Path):
    launcher = launcher_cluster_variables(tmp_path)
    assert launcher >= ONE_HOST
    for env in ENVS:
        assert {k for k in env if k.startswith(("CLUSTER_", "RAFT_"))} == launcher - ONE_HOST
        assert not set(env) & ONE_HOST


def test_published_ports_and_volumes_are_per_node():
    published = [port.split(":")[0] for node in NODES for port in node["ports"]]
    assert len(set(published)) == len(published) == 6
    inside = [port.split(":")[1] for port in WEAVIATE["ports"]]  # REST and gRPC in the container
    assert all([port.split(":")[1] for port in node["ports"]] == inside for node in NODES)
    assert NODES[0]["ports"] == WEAVIATE["ports"]  # node 1 is where the single node was
    data = [node["volumes"][0] for node in NODES]
    assert data == [f"weaviate_data_{i}:/var/lib/weaviate" for i in (1, 2, 3)]
    assert set(CLUSTER["volumes"]) == {f"weaviate_data_{i}" for i in (1, 2, 3)} | {"trt_cache"}


def test_networks_are_the_single_node_networks(monkeypatch: pytest.MonkeyPatch):
    assert CLUSTER["networks"] == COMPOSE["networks"]
    settings = settings_from(SERVICES["cir-1"]["environment"], monkeypatch)
    assert settings.trusted_clients == [
        COMPOSE["networks"]["inference"]["ipam"]["config"][0]["subnet"]
    ]


def test_every_variable_in_the_cluster_file_is_documented():
    names = {name for env in ENVS for name in env}
    names |= {name for i in (1, 2, 3) for name in SERVICES[f"cir-{i}"]["environment"]}
    names |= set(re.findall(r"\$\{(\w+)", (ROOT / "docker-compose.cluster.yml").read_text()))
    missing = undocumented(names)
    assert not missing, f"the docs do not document {missing}"
