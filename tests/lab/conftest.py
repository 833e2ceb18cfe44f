"""The compose lab's parts run here without docker: fixtures for tests/lab/.

The lab's own script (fixtures/lab/make_zones.py) makes the material with loopback addresses
(127.<70 + worker>.x.y, each checked by binding) and free ports given as arguments, and the
real servers run from the configuration it wrote, exactly as the compose services run them:

    lab_material    the made lab (`LabMaterial`): folder, manifest, addresses, ports
    lab_dns         knotd and unbound running (session); `LabMaterial.query` asks unbound
    lab_receivers   the three Postfix receivers running (session; needs root, as Postfix does)
    lab_policies    nginx serving the MTA-STS policies (session; on port 443 when root)

Programs come from Debian's knot, knot-dnssecutils, unbound, postfix and nginx-light
(scripts/install-lab-tools); a test whose programs are missing is skipped, naming them. Every
process is stopped after the session, whatever happened.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from delivery.harness import loopback

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "fixtures" / "lab"
WORKER_BLOCK_BASE = 70  # 127.70.x.y for gw0, 127.71 for gw1...; 127.69 without xdist
START_TIMEOUT_S = 20.0  # generous: Postfix's start script alone takes seconds on a busy machine
STOP_TIMEOUT_S = 10.0
POLL_S = 0.05  # a process's readiness is its answer: asked this often until the deadline
SBIN = "/usr/sbin:/usr/lib/postfix/sbin"


def load_make_zones() -> ModuleType:
    """fixtures/lab/make_zones.py as a module (it is a script, not a package module)."""
    name = "lab_make_zones"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, LAB / "make_zones.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def which(program: str) -> str | None:
    return shutil.which(program, path=os.pathsep.join([os.environ.get("PATH", ""), SBIN]))


def require_programs(*programs: str) -> None:
    """Skip the test when a program is missing, naming it and how to get it."""
    missing = [p for p in programs if which(p) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: run scripts/install-lab-tools as root")


def require_root(why: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"needs root: {why}")


def _worker_block() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    number = int(worker.removeprefix("gw")) if worker.startswith("gw") else -1
    return (WORKER_BLOCK_BASE + number) % 256


def free_port(host: str) -> int:
    """A port free on ``host`` for both TCP and UDP (DNS servers bind both)."""
    for _ in range(64):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
            return port
    raise OSError(f"no port free for TCP and UDP on {host}")


@dataclass
class LabMaterial:
    """A lab made by make_zones.py, and where its servers listen."""

    out: Path
    manifest: dict[str, Any]
    addresses: dict[str, str]
    ports: dict[str, int]
    logs: Path

    def query(self, name: str, rtype: str, *, timeout: float = 5.0) -> dns.message.Message:
        """Ask the lab's resolver (unbound), with DNSSEC OK, over UDP."""
        request = dns.message.make_query(name, rtype, want_dnssec=True)
        return dns.query.udp(
            request, self.addresses["resolver"], port=self.ports["resolver"], timeout=timeout
        )

    def log_tail(self, name: str, lines: int = 20) -> str:
        try:
            text = (self.logs / name).read_text(errors="replace")
        except OSError:
            return f"(no {name})"
        return "\n".join(text.splitlines()[-lines:])


def wait_for(ready: Callable[[], bool], what: str, *, on_timeout: Callable[[], str]) -> None:
    """Ask ``ready`` until it says yes; fail naming ``what`` and quoting the process's log."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not come up within {START_TIMEOUT_S:.0f} s:\n{on_timeout()}")
        time.sleep(POLL_S)


def listening(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


@contextlib.contextmanager
def running(argv: Sequence[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A foreground server process, its output in ``log``; terminated (then killed) at exit."""
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="session")
def lab_material() -> Iterator[LabMaterial]:
    """fixtures/lab/make_zones.py run into a fresh folder, with loopback addresses and ports."""
    require_programs("kzonesign")
    make_zones = load_make_zones()
    pool = loopback.LoopbackPool(_worker_block(), start=os.getpid() % 200)
    addresses = {role: pool.take() for role in make_zones.DEFAULT_ADDRESSES}
    ports = {role: free_port(addresses[role]) for role in ("auth", "resolver", "harness-dns")}
    receivers = [addresses[role] for role in make_zones.RECEIVERS]
    ports["smtp"], sockets = loopback.bind_same_port(receivers)
    for sock in sockets.values():
        sock.close()
    # The engine fetches policies on port 443 only; without root the policy server takes
    # another port, and the tests that need 443 skip.
    ports["https"] = 443 if os.geteuid() == 0 else free_port(addresses["mta-sts"])
    # Postfix's daemons (user postfix) and nginx's worker (www-data) read below the folder.
    out = Path(tempfile.mkdtemp(prefix="delivery-lab-"))
    out.chmod(0o755)
    try:
        lab = make_zones.Lab(out / "gen", addresses, ports, "127.0.0.0/8", log_dir=out / "log")
        manifest = make_zones.make(lab)
        yield LabMaterial(out / "gen", manifest, addresses, ports, out / "log")
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _validates(lab: LabMaterial) -> bool:
    try:
        answer = lab.query("lab.test", "SOA", timeout=0.5)
    except (OSError, dns.exception.Timeout):
        return False
    return bool(answer.flags & dns.flags.AD)


@pytest.fixture(scope="session")
def lab_dns(lab_material: LabMaterial) -> Iterator[LabMaterial]:
    """knotd and unbound, started from the configuration make_zones.py wrote."""
    require_programs("knotd", "unbound")
    lab = lab_material
    knot_conf = lab.out / "knot" / "knot.conf"
    unbound_conf = lab.out / "unbound" / "unbound.conf"
    with (
        running([which("knotd") or "knotd", "-c", str(knot_conf)], lab.logs / "knotd.log"),
        running([which("unbound") or "unbound", "-d", "-c", str(unbound_conf)],
                lab.logs / "unbound.log"),
    ):  # fmt: skip
        wait_for(
            lambda: _validates(lab),
            "unbound answering lab.test with AD",
            on_timeout=lambda: lab.log_tail("knotd.log") + "\n" + lab.log_tail("unbound.log"),
        )
        yield lab


def postfix(lab: LabMaterial, role: str, command: str) -> subprocess.CompletedProcess[str]:
    """``postfix -c <role's etc> <command>``."""
    etc = lab.out / "postfix" / role / "etc"
    argv = [which("postfix") or "postfix", "-c", str(etc), command]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def master_pid(lab: LabMaterial, role: str) -> int | None:
    """The pid of the receiver's Postfix master while it runs (from its own pid file)."""
    pid_file = lab.out / "postfix" / role / "spool" / "pid" / "master.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    return None if state in ("Z", "X") else pid


def stop_postfix(lab: LabMaterial, role: str) -> None:
    """``postfix stop``, then wait for the master to exit (killed, by its pid, if it will not)."""
    pid = master_pid(lab, role)
    if pid is None:
        return
    postfix(lab, role, "stop")
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while master_pid(lab, role) == pid:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return
        time.sleep(POLL_S)


@pytest.fixture(scope="session")
def lab_receivers(lab_material: LabMaterial) -> Iterator[LabMaterial]:
    """The three Postfix receivers, each started with ``postfix -c DIR start``."""
    require_programs("postfix", "postconf")
    require_root("Postfix starts as root and hands its folders to the postfix user")
    lab = lab_material
    make_zones = load_make_zones()
    roles = list(make_zones.RECEIVERS)
    try:
        starts = [
            subprocess.Popen(
                [which("postfix") or "postfix", "-c", str(lab.out / "postfix" / r / "etc"),
                 "start"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )
            for r in roles
        ]  # fmt: skip
        for role, start in zip(roles, starts, strict=True):
            output = start.communicate(timeout=START_TIMEOUT_S)[0].decode(errors="replace")
            if start.returncode != 0:
                pytest.fail(
                    f"postfix start of {role} failed: {output}\n"
                    f"{lab.log_tail(f'{role}.maillog')}\n(Postfix prints its reason only on "
                    "a terminal: run the same postfix -c ... start in one to see it)"
                )
        for role in roles:
            address = lab.addresses[role]
            wait_for(
                functools.partial(listening, address, lab.ports["smtp"]),
                f"Postfix {role} on {address}:{lab.ports['smtp']}",
                on_timeout=functools.partial(lab.log_tail, f"{role}.maillog"),
            )
        yield lab
    finally:
        for role in roles:
            stop_postfix(lab, role)


@pytest.fixture(scope="session")
def lab_policies(lab_material: LabMaterial) -> Iterator[LabMaterial]:
    """nginx serving the lab's MTA-STS policies."""
    require_programs("nginx")
    lab = lab_material
    conf = lab.out / "nginx" / "nginx.conf"
    with running([which("nginx") or "nginx", "-c", str(conf)], lab.logs / "nginx.out"):
        wait_for(
            lambda: listening(lab.addresses["mta-sts"], lab.ports["https"]),
            "nginx",
            on_timeout=lambda: lab.log_tail("nginx.out") + lab.log_tail("nginx.error.log"),
        )
        yield lab
