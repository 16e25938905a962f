"""vmkitd's REST API (FastAPI; the schema is at /openapi.json).

    GET    /v1/vms                      list
    POST   /v1/vms                      create (?start=true to start it too)
    GET    /v1/vms/{name}               one VM, with its worker's figures
    PATCH  /v1/vms/{name}               change a stopped VM
    DELETE /v1/vms/{name}               delete (?force=true kills a running one first)
    POST   /v1/vms/{name}/start|stop|kill|pause|resume|reboot
    GET    /v1/vms/{name}/log           the serial log (?tail=BYTES)
    WS     /v1/vms/{name}/console       the console, binary frames both ways
    GET    /v1/events                   events after ?since=ID (?wait=SECONDS long-polls)
    GET    /v1/events/stream            events as they happen, one JSON object a line
    GET    /v1/host                     host capacity and what is allocated

Every error is JSON, an `ApiError`: {"error": class, "message": text}, with
404 not_found, 409 conflict/capacity, 422 invalid, 401 unauthorized. Blocking
work (the registry, worker sockets) runs in FastAPI's thread pool, so one slow
worker does not hold up the event loop.
"""

from __future__ import annotations

import asyncio
import hmac

from fastapi import FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from vmkit.hypervisor.capacity import CapacityError
from vmkit.hypervisor.models import ApiError, Event, HostCapacity, VmInfo, VmSpec, VmState, VmUpdate
from vmkit.hypervisor.registry import Conflict, NotFound, RegistryError
from vmkit.hypervisor.supervisor import Supervisor, SupervisorError, socket_path
from vmkit.hypervisor.vmdir import VmDirError

ERRORS = {404: {"model": ApiError}, 409: {"model": ApiError}, 422: {"model": ApiError}}
# For routes whose success is not JSON: their errors still are.
JSON_ERRORS = {code: {"description": "an ApiError",
                      "content": {"application/json": {"schema": ApiError.model_json_schema()}}}
               for code in (404, 422)}
MAX_LOG_TAIL = 16 << 20


class StopRequest(BaseModel):
    force: bool = Field(False, description="kill at once instead of asking the guest to power off")
    timeout: float = Field(30.0, ge=0, le=3600, description="seconds before a graceful stop turns into a kill")


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content=ApiError(error=kind, message=message).model_dump())


def create_app(supervisor: Supervisor, token: str | None = None) -> FastAPI:
    """The API over `supervisor`. With a token, every request must carry
    `Authorization: Bearer TOKEN` (for the TCP listener)."""
    app = FastAPI(title="vmkitd", version="1", description="vmkit's hypervisor daemon: VMs, their "
                  "state, consoles, events and the host's capacity.")
    sup = supervisor

    if token is not None:
        @app.middleware("http")
        async def _auth(request: Request, call_next):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return _error(401, "unauthorized", "this listener needs 'Authorization: Bearer <token>'")
            return await call_next(request)

    def answer(status: int, kind: str):
        async def handler(_request, e):
            return _error(status, kind, str(e))
        return handler

    # Our exceptions and what the client is told: a class and the message.
    for exc, status, kind in ((NotFound, 404, "not_found"), (Conflict, 409, "conflict"),
                              (SupervisorError, 409, "conflict"), (CapacityError, 409, "capacity"),
                              (RegistryError, 500, "internal"), (VmDirError, 500, "internal"),
                              (OSError, 500, "internal")):
        app.add_exception_handler(exc, answer(status, kind))

    @app.exception_handler(RequestValidationError)
    @app.exception_handler(ValidationError)      # a change that makes a VmSpec invalid
    async def _invalid(_r, e):
        return _error(422, "invalid", "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}"
                                                for err in e.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_r, e):
        kind = {404: "not_found", 405: "invalid", 401: "unauthorized"}.get(e.status_code, "invalid")
        return _error(e.status_code, kind, str(e.detail))


    def info(name: str) -> VmInfo:
        return with_figures(sup.registry.get(name))

    def with_figures(vm: VmInfo) -> VmInfo:
        """The VM with its worker's last figures (from the pacer's status reads)."""
        status = sup.status(vm.spec.name) if vm.state != VmState.stopped else None
        if status:
            vm = vm.model_copy(update={"instructions": status.get("instructions"),
                                       "cpu_seconds": status.get("cpu_seconds"),
                                       "rss_bytes": status.get("rss")})
        return vm

    @app.get("/v1/vms", response_model=list[VmInfo], tags=["vms"])
    def list_vms():
        return [with_figures(vm) for vm in sup.registry.list()]

    @app.post("/v1/vms", response_model=VmInfo, status_code=201, responses=ERRORS, tags=["vms"])
    def create_vm(spec: VmSpec, start: bool = Query(False, description="start it at once")):
        sup.create(spec)
        if start:
            try:
                sup.start(spec.name)
            except (CapacityError, SupervisorError):
                sup.delete(spec.name)       # launch is all or nothing
                raise
        return info(spec.name)

    @app.get("/v1/vms/{name}", response_model=VmInfo, responses=ERRORS, tags=["vms"])
    def get_vm(name: str):
        return info(name)

    @app.patch("/v1/vms/{name}", response_model=VmInfo, responses=ERRORS, tags=["vms"])
    def update_vm(name: str, update: VmUpdate):
        sup.update(name, update)
        return info(name)

    @app.delete("/v1/vms/{name}", status_code=204, responses=ERRORS, tags=["vms"])
    def delete_vm(name: str, force: bool = Query(False, description="kill it first if it runs")):
        sup.delete(name, force=force)

    @app.post("/v1/vms/{name}/start", response_model=VmInfo, responses=ERRORS, tags=["state"])
    def start_vm(name: str):
        sup.start(name)
        return info(name)

    @app.post("/v1/vms/{name}/stop", response_model=VmInfo, responses=ERRORS, tags=["state"])
    def stop_vm(name: str, request: StopRequest | None = None):
        request = request or StopRequest()
        sup.stop(name, force=request.force, timeout=request.timeout)
        return info(name)

    def state_change(op: str):
        def handler(name: str):
            getattr(sup, op)(name)
            return info(name)
        return handler

    for op in ("kill", "pause", "resume", "reboot"):
        handler = state_change(op)
        app.post(f"/v1/vms/{{name}}/{op}", response_model=VmInfo, responses=ERRORS, tags=["state"],
                 name=f"{op}_vm")(handler)

    @app.get("/v1/vms/{name}/log", response_class=PlainTextResponse, responses=JSON_ERRORS, tags=["console"])
    def vm_log(name: str, tail: int = Query(64 * 1024, ge=0, le=MAX_LOG_TAIL)):
        sup.registry.get(name)
        vmdir = sup.vmdir(name)
        data = b""
        for part in (vmdir.serial_log.with_name("serial.log.1"), vmdir.serial_log):
            try:
                data += part.read_bytes()
            except FileNotFoundError:
                pass
        return PlainTextResponse(data[-tail:].decode(errors="replace") if tail else "")

    @app.websocket("/v1/vms/{name}/console")
    async def vm_console(ws: WebSocket, name: str):
        if token is not None and not hmac.compare_digest(
                ws.headers.get("authorization", "").encode(), f"Bearer {token}".encode()):
            await ws.close(code=4401, reason="unauthorized")
            return
        try:
            vm = await asyncio.to_thread(sup.registry.get, name)
        except NotFound as e:
            await ws.close(code=4404, reason=str(e)[:120])
            return
        if vm.state not in (VmState.running, VmState.paused, VmState.stopping):
            await ws.close(code=4409, reason=f"vm {name!r} is {vm.state.value}")
            return
        try:
            with socket_path(sup.vmdir(name).console_sock) as path:
                reader, writer = await asyncio.open_unix_connection(path)
        except OSError as e:
            await ws.close(code=4409, reason=f"console unavailable: {e.strerror or e}"[:120])
            return
        await ws.accept()

        async def to_guest():
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    return
                data = msg.get("bytes") or (msg.get("text") or "").encode()
                writer.write(data)
                await writer.drain()

        async def from_guest():
            while chunk := await reader.read(65536):
                await ws.send_bytes(chunk)

        tasks = [asyncio.create_task(to_guest()), asyncio.create_task(from_guest())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except WebSocketDisconnect:
            pass
        finally:
            for t in tasks:
                t.cancel()
            writer.close()
            try:
                await ws.close()
            except (RuntimeError, WebSocketDisconnect):
                pass                    # the client went first

    @app.get("/v1/events", response_model=list[Event], tags=["events"])
    async def events(since: int = Query(0, ge=0, le=2**62, description="only events after this id"),
                     wait: float = Query(0.0, ge=0.0, le=5.0,
                                         description="long poll: wait up to this many seconds for an event"),
                     limit: int = Query(1000, ge=1, le=10000)):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            batch = await asyncio.to_thread(sup.registry.events, since, limit)
            if batch or loop.time() >= deadline:
                return batch
            await asyncio.sleep(0.2)

    @app.get("/v1/events/stream", tags=["events"], response_class=StreamingResponse,
             responses={200: {"description": "one Event as JSON per line, as they happen",
                              "content": {"application/x-ndjson": {}}}})
    async def event_stream(since: int = Query(0, ge=0, le=2**62, description="start after this event id")):
        """Events as they happen (newline-delimited JSON), until the client goes."""
        async def lines():
            last = since
            while True:
                for ev in await asyncio.to_thread(sup.registry.events, last, 1000):
                    last = ev.id
                    yield ev.model_dump_json() + "\n"
                await asyncio.sleep(0.2)
        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.get("/v1/host", response_model=HostCapacity, tags=["host"])
    def host():
        return sup.capacity.usage(sup.running_specs())

    return app
