"""The REST API without guests: schemathesis drives every operation in
/openapi.json with generated requests and checks that none gets a 500 or an
answer that breaks the schema. The supervisor is real, over an image
directory with no images, so no request can start a worker."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from fastapi.testclient import TestClient

from vmkit.hypervisor.api import create_app
from vmkit.hypervisor.capacity import Capacity
from vmkit.hypervisor.models import VmSpec
from vmkit.hypervisor.registry import Registry
from vmkit.hypervisor.supervisor import Supervisor


def make_app(tmp, token=None):
    registry = Registry(tmp / "registry.sqlite")
    (tmp / "images").mkdir(exist_ok=True)
    sup = Supervisor(tmp, registry, Capacity(2, 8 << 30, 100 << 30), tmp / "images")
    registry.create(VmSpec(name="present"))          # a stopped VM for the operations to find
    return create_app(sup, token=token), sup


def test_openapi_no_server_errors_and_schema_kept(tmp_path):
    app, _sup = make_app(tmp_path)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    # The event stream never ends by itself: test_event_stream below covers it.
    operations = [op for op in (result.ok() for result in schema.get_all_operations())
                  if op.path != "/v1/events/stream"]
    assert len(operations) >= 12
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case):
            case.call_and_validate()
        run()


def test_errors_are_json_with_a_class(tmp_path):
    app, _ = make_app(tmp_path)
    c = TestClient(app)
    r = c.get("/v1/vms/nope")
    assert r.status_code == 404 and r.json()["error"] == "not_found" and "nope" in r.json()["message"]
    r = c.post("/v1/vms", json={"name": "Bad_Name"})
    assert r.status_code == 422 and r.json()["error"] == "invalid" and "should match pattern" in r.json()["message"]
    r = c.post("/v1/vms", json={"name": "present"})
    assert r.status_code == 409 and r.json()["error"] == "conflict"
    r = c.post("/v1/vms", json={"name": "other", "image": "missing"})
    assert r.status_code == 409 and "no image 'missing'" in r.json()["message"]
    r = c.post("/v1/vms/present/pause")
    assert r.status_code == 409 and "stopped" in r.json()["message"]
    r = c.post("/v1/vms", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "invalid"
    r = c.patch("/v1/vms/present", json={"memory_mib": 1024})
    assert r.status_code == 200 and r.json()["spec"]["memory_mib"] == 1024
    assert c.get("/v1/host").json()["running_vms"] == 0


def test_token_is_required_when_set(tmp_path):
    app, _ = make_app(tmp_path, token="s3cret")
    c = TestClient(app)
    r = c.get("/v1/vms")
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert c.get("/v1/vms", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/v1/vms", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_event_stream_delivers_events_as_they_happen(tmp_path):
    import json
    import threading
    app, sup = make_app(tmp_path)
    sup.registry.add_event("present", "started")
    got = []
    with TestClient(app) as c:
        with c.stream("GET", "/v1/events/stream") as r:
            assert r.headers["content-type"].startswith("application/x-ndjson")
            threading.Timer(0.5, lambda: sup.registry.add_event("present", "paused")).start()
            for line in r.iter_lines():
                got.append(json.loads(line))
                if len(got) == 2:
                    break
    assert [e["kind"] for e in got] == ["started", "paused"] and got[0]["id"] < got[1]["id"]
