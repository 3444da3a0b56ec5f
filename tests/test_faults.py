"""Faults against the real Weaviate and the real service: the inference service killed and
restarted during a batch import loses nothing."""

from __future__ import annotations

import time
import uuid

import pytest

from integration.processes import free_port
from integration.schema import create_image_collection
from integration.service_process import ServiceProcess
from integration.stack import connect
from integration.weaviate_server import WeaviateServer
from tests.conftest import ingest_with_fault, png_b64, scene_images

pytestmark = pytest.mark.integration

N = 240


def test_service_killed_during_import_then_failed_objects_are_resent(tiny_checkpoint):
    port = free_port()
    services = [ServiceProcess(tiny_checkpoint, port=port).start()]
    objects = [(f"obj-{i}", {"image": png_b64(im), "key": f"obj-{i}"})
               for i, im in enumerate(scene_images(N, seed=31))]  # fmt: skip
    try:
        with WeaviateServer(services[0].url) as server, connect(server) as client:
            name = f"CIRFault_{uuid.uuid4().hex[:8]}"
            collection = create_image_collection(client, name, text_properties=("key",))

            def kill_then_restart() -> None:
                services[0].kill()
                time.sleep(1.0)
                services.append(ServiceProcess(tiny_checkpoint, port=port).start())

            try:
                final, rounds = ingest_with_fault(
                    collection, objects, watched=collection, at=24, fault=kill_then_restart,
                    rounds=6, wait_s=2.0, batch_size=8, concurrent_requests=1,
                )  # fmt: skip
                assert final.failed == [], final.failed[:3]
                assert len(collection) == N  # none lost, none duplicated
                if len(rounds) > 1:  # what failed while the service was down was re-sent
                    assert {k for k, _ in rounds[0].failed} >= {k for k, _ in rounds[-1].failed}
                    assert any("connect" in m.lower() or "refused" in m.lower()
                               for _, m in rounds[0].failed)  # fmt: skip
                keys = {o.properties["key"] for o in collection.iterator(return_properties=["key"])}
                assert keys == {k for k, _ in objects}
            finally:
                client.collections.delete(name)
    finally:
        for service in services:
            service.stop()
