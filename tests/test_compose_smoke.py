"""The query step of ``make compose-smoke`` (``integration/compose_smoke.py``) against the
real Weaviate of the suite: the demo's queries through any client, and ``connect_to_url``
with the API key that the compose stack requires. The containers themselves are run by
``make compose-smoke`` only (root, podman, minutes)."""

from __future__ import annotations

import pytest
import weaviate.exceptions

from integration.demo import demo_queries
from integration.stack import connect_to_url
from integration.weaviate_server import WeaviateServer

pytestmark = pytest.mark.integration


def test_demo_queries_rank_each_query_and_leave_no_collection(client, capsys):
    before = set(client.collections.list_all())
    rankings = demo_queries(client, gallery_size=12, num_queries=2, top_k=3)
    assert [len(r) for r in rankings] == [3, 3]
    assert "target ranked first for" in capsys.readouterr().out
    assert set(client.collections.list_all()) == before


def test_connect_to_url_sends_the_api_key(service):
    """A Weaviate configured as in docker-compose.yml (no anonymous access, one API key)
    answers the key's holder and refuses a client without it."""
    auth = {
        "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED": "false",
        "AUTHENTICATION_APIKEY_ENABLED": "true",
        "AUTHENTICATION_APIKEY_ALLOWED_KEYS": "smoke-key",
        "AUTHENTICATION_APIKEY_USERS": "admin",
    }
    with WeaviateServer(service.url, env=auth) as server:
        with connect_to_url(server.url, server.grpc_port, api_key="smoke-key") as client:
            assert client.collections.list_all() == {}
        # Refused as the client connects (its meta request).
        with (
            pytest.raises(weaviate.exceptions.UnexpectedStatusCodeError, match="401"),
            connect_to_url(server.url, server.grpc_port) as client,
        ):
            client.collections.list_all()
