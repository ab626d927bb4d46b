"""The docker-compose.yml stack, run natively: every service's command and environment,
without a container engine.

The compose file is read with a small parser of the YAML subset it is written in (block
mappings and sequences, JSON-style flow lists, quoted and plain scalars, comments);
``docker-compose config`` in CI checks that the file is valid compose. Each service's
``command`` runs as ``python -m <package>`` with exactly its ``environment``, after three
rewrites that stand in for the container network: the broker port becomes a free local
port, the ``broker`` host becomes 127.0.0.1, and volume mount points become temporary
directories. The file worker runs twice (``--scale file-worker=2``). The health checks
run too, and must pass. Then the ``client`` service's command registers, uploads a file
from the ``./drop`` mount and downloads it again into a mount of its own, and the
download equals the source; the stored file is also read back with the server's own code
(opening every chunk under its data key).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from config import load_settings
from workers.admin_check import plaintext
from workers.admin_store import AdminStore
from workers.app import open_server
from workers.blobs import Blobs

from .procs import ROOT, WAIT, Proc, free_port, wait_for

pytestmark = pytest.mark.integration

COMPOSE = ROOT / "docker-compose.yml"
MODULES = {
    "cipherdrop-broker": "broker",
    "cipherdrop-worker": "workers",
    "cipherdrop-server": "workers.server",
    "cipherdrop-admin": "workers.admin",
    "cipherdrop": "client",
}
CONTAINER_PORT = "5555"

# -- a parser for the YAML subset of docker-compose.yml -----------------------------------


def _strip_comment(line: str) -> str:
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def _scalar(text: str) -> Any:
    if text[:1] in '["{':
        return json.loads(text)
    if text[:1] == "'":
        return text[1:-1].replace("''", "'")
    return text


def _block(lines: list[tuple[int, str]], start: int, indent: int) -> tuple[Any, int]:
    """Parse the block whose lines start at ``start`` with exactly ``indent`` spaces."""
    is_list = lines[start][1].startswith("- ")
    result: Any = [] if is_list else {}
    i = start
    while i < len(lines) and lines[i][0] == indent:
        text = lines[i][1]
        if is_list:
            if not text.startswith("- "):
                raise ValueError(f"mixed block at line {text!r}")
            result.append(_scalar(text[2:].strip()))
            i += 1
            continue
        key, sep, rest = text.partition(":")
        if not sep:
            raise ValueError(f"not a mapping entry: {text!r}")
        rest = rest.strip()
        i += 1
        if rest:
            result[key.strip()] = _scalar(rest)
        elif i < len(lines) and lines[i][0] > indent:
            result[key.strip()], i = _block(lines, i, lines[i][0])
        else:
            result[key.strip()] = None
    return result, i


def parse_compose(text: str) -> dict[str, Any]:
    lines = []
    for raw in text.splitlines():
        line = _strip_comment(raw)
        if line.strip():
            lines.append((len(line) - len(line.lstrip(" ")), line.strip()))
    parsed, end = _block(lines, 0, 0)
    if end != len(lines):
        raise ValueError(f"unparsed line: {lines[end]}")
    return dict(parsed)


def test_the_parser_reads_the_subset() -> None:
    text = """
a:  # comment
  b: "x # not a comment"
  c: ["CMD", "ping"]
  d:
    - "5555:5555"
    - plain
e:
"""
    assert parse_compose(text) == {
        "a": {"b": "x # not a comment", "c": ["CMD", "ping"], "d": ["5555:5555", "plain"]},
        "e": None,
    }


# -- running the services natively ---------------------------------------------------------


class Rewrite:
    """Container addresses and mount points -> their stand-ins on this machine."""

    def __init__(self, base: Path, port: int) -> None:
        self.base = base
        self.port = port

    def mounts(self, service: Mapping[str, Any]) -> dict[str, str]:
        found = {}
        for volume in service.get("volumes") or []:
            source, target = volume.split(":")[:2]
            local = self.base / "volumes" / source.strip("./")
            local.mkdir(parents=True, exist_ok=True)
            found[target] = str(local)
        return found

    def text(self, value: str, mounts: Mapping[str, str]) -> str:
        value = re.sub(
            rf"tcp://(\*|broker|127\.0\.0\.1|0\.0\.0\.0):{CONTAINER_PORT}\b",
            f"tcp://127.0.0.1:{self.port}",
            value,
        )
        for target, local in mounts.items():
            if value == target or value.startswith(target + "/"):
                value = local + value[len(target) :]
        return value

    def argv(self, words: list[str], service: Mapping[str, Any]) -> list[str]:
        mounts = self.mounts(service)
        program, *args = words
        return [sys.executable, "-m", MODULES[program], *(self.text(a, mounts) for a in args)]

    def env(self, service: Mapping[str, Any]) -> dict[str, str]:
        mounts = self.mounts(service)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CIPHERDROP_")}
        env["PYTHONPATH"] = str(ROOT)
        for name, value in (service.get("environment") or {}).items():
            env[name] = self.text(str(value), mounts)
        return env


def service_proc(argv: list[str], env: Mapping[str, str], name: str) -> Proc:
    """A service's process with exactly ``env`` (``env -i`` drops the test's own)."""
    return Proc(["env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv], name)


def run(
    argv: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def healthy(rewrite: Rewrite, service: Mapping[str, Any], timeout: float = 6 * WAIT) -> None:
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD"
    argv, env = rewrite.argv(test[1:], service), rewrite.env(service)
    stderr = ""

    def passes() -> bool:
        nonlocal stderr
        result = run(argv, env)
        stderr = result.stderr
        return result.returncode == 0

    if not wait_for(passes, timeout, pace=0.2):
        raise TimeoutError(f"health check {test} never passed: {stderr}")


@pytest.fixture
def compose() -> dict[str, Any]:
    return parse_compose(COMPOSE.read_text())


@pytest.fixture
def started(tmp_path: Path, compose: dict[str, Any]) -> Iterator[tuple[Rewrite, list[Proc]]]:
    rewrite = Rewrite(tmp_path, free_port())
    services = compose["services"]
    procs: list[Proc] = []
    try:
        for name, scale in (("broker", 1), ("register-worker", 1), ("key-worker", 1)):
            service = services[name]
            for _ in range(scale):
                argv = rewrite.argv(service["command"], service)
                procs.append(service_proc(argv, rewrite.env(service), name))
            healthy(rewrite, service)
        file_worker = services["file-worker"]
        for number in range(2):  # docker compose up --scale file-worker=2
            argv = rewrite.argv(file_worker["command"], file_worker)
            procs.append(service_proc(argv, rewrite.env(file_worker), f"file-worker-{number}"))
        healthy(rewrite, file_worker)
        yield rewrite, procs
    finally:
        for proc in reversed(procs):
            proc.stop()


def test_the_compose_file_has_the_documented_shape(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"broker", "register-worker", "key-worker", "file-worker", "client"}
    assert services["client"]["profiles"] == ["client"]
    assert services["broker"]["ports"] == [f"{CONTAINER_PORT}:{CONTAINER_PORT}"]
    assert set(compose["volumes"]) >= {"cipherdrop-data"}
    for name in ("register-worker", "key-worker", "file-worker"):
        service = services[name]
        assert "cipherdrop-data:/data" in service["volumes"]
        assert service["environment"]["CIPHERDROP_DATA"] == "/data"
        assert service["restart"] == "unless-stopped"
        assert service["healthcheck"]["test"][:3] == ["CMD", "cipherdrop-admin", "ping"]
    file_worker = services["file-worker"]
    assert "ports" not in file_worker and "container_name" not in file_worker  # scalable


def test_the_compose_services_complete_a_round_trip_natively(
    started: tuple[Rewrite, list[Proc]], compose: dict[str, Any], tmp_path: Path
) -> None:
    rewrite, procs = started
    assert all(proc.popen.poll() is None for proc in procs)
    client = compose["services"]["client"]
    mounts = rewrite.mounts(client)
    drop = Path(mounts["/drop"])
    payload = b"sent through the compose services\n" * 40_000 + os.urandom(100_000)
    (drop / "hello.bin").write_bytes(payload)

    def cipherdrop(*args: str) -> subprocess.CompletedProcess[str]:
        argv = rewrite.argv([*client["entrypoint"], *args], client)
        return run(argv, rewrite.env(client))

    registered = cipherdrop("register", "alice")
    assert registered.returncode == 0, registered.stderr
    put = cipherdrop("put", "/drop/hello.bin", "-q")
    assert put.returncode == 0, put.stderr
    assert "verified" in put.stdout

    # Download it through the same service definition, as
    # ``docker compose run -v ./out:/out client get hello.bin -o /out/hello.bin`` would
    # (the ./drop mount is read-only, so the download gets a mount of its own).
    getter = {**client, "volumes": [*client["volumes"], "./out:/out"]}
    out = Path(rewrite.mounts(getter)["/out"])
    argv = rewrite.argv([*client["entrypoint"], "get", "hello.bin", "-o", "/out/hello.bin"], getter)
    got = run(argv, rewrite.env(getter))
    assert got.returncode == 0, got.stderr
    assert (out / "hello.bin").read_bytes() == payload

    # Read it back with the server's code, from the worker's data volume.
    worker = compose["services"]["file-worker"]
    data_dir = rewrite.env(worker)["CIPHERDROP_DATA"]
    settings = load_settings(env={"CIPHERDROP_DATA": data_dir})
    server = open_server(settings, env={})
    server.store.close()
    with closing(AdminStore.open(server.data.db_path)) as store:
        (stored,) = store.stored_files()
        assert (stored.client_name, stored.name, stored.size) == (
            "alice",
            "hello.bin",
            len(payload),
        )
        blobs = Blobs(server.data.blobs_path)
        assert b"".join(plaintext(store, blobs, server.data.master, stored)) == payload
