"""docker-compose.yml and the Dockerfile hold together with the repository (docker cannot run here).

Every build context, Dockerfile target, bind-mounted source, config file and fixtures/lab path a
service names exists; every image is pinned by version (the compose images and the Dockerfile's
base); fixed addresses are make_zones.py's; the engine's settings load and point at the lab's
resolver, port and CA; the harness service and Unbound agree on faults.test; and the harness
scenario fixtures/lab/lab.toml is the same lab as make_zones.py's tables.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest

from delivery import config
from delivery.harness import scenario
from tests.lab.conftest import LAB, REPO, LabMaterial, load_make_zones

yaml = pytest.importorskip("yaml", reason="PyYAML reads docker-compose.yml")

COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
SERVICE_ROLES = {  # compose service -> make_zones.py address role
    "auth": "auth",
    "mailhost": "engine",
    "mx-valid": "mx-valid",
    "mx-selfsigned": "mx-selfsigned",
    "mx-plain": "mx-plain",
    "mta-sts": "mta-sts",
}
# The Compose Specification (compose-spec.json): the keys a file may use, so a typo is caught here
# rather than by `docker compose config` on a machine that has it.
# fmt: off
TOP_LEVEL_KEYS = {
    "version", "name", "include", "services", "models", "networks", "volumes", "secrets",
    "configs",
}
SERVICE_KEYS = {
    "develop", "deploy", "annotations", "attach", "build", "blkio_config", "cap_add",
    "cap_drop", "cgroup", "cgroup_parent", "command", "configs", "container_name", "cpu_count",
    "cpu_percent", "cpu_shares", "cpu_quota", "cpu_period", "cpu_rt_period", "cpu_rt_runtime",
    "cpus", "cpuset", "credential_spec", "depends_on", "device_cgroup_rules", "devices", "dns",
    "dns_opt", "dns_search", "domainname", "entrypoint", "env_file", "label_file",
    "environment", "expose", "extends", "provider", "external_links", "extra_hosts", "gpus",
    "group_add", "healthcheck", "hostname", "image", "init", "ipc", "isolation", "labels",
    "links", "logging", "mac_address", "mem_limit", "mem_reservation", "mem_swappiness",
    "memswap_limit", "network_mode", "models", "networks", "oom_kill_disable", "oom_score_adj",
    "pid", "pids_limit", "platform", "ports", "post_start", "pre_stop", "privileged",
    "profiles", "pull_policy", "pull_refresh_after", "read_only", "restart", "runtime", "scale",
    "security_opt", "shm_size", "secrets", "sysctls", "stdin_open", "stop_grace_period",
    "stop_signal", "storage_opt", "tmpfs", "tty", "ulimits", "use_api_socket", "user", "uts",
    "userns_mode", "volumes", "volumes_from", "working_dir",
}
# fmt: on
DEPENDS_ON_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
LAB_PATH = re.compile(r"/lab/(fixtures|gen)/[^\s\"',;]+")


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found = compose()["services"]
    assert isinstance(found, dict) and found
    return found


def dockerfile_stages(path: Path) -> list[tuple[str, str | None]]:
    """(base image, stage name) of each FROM line."""
    stages = []
    for line in path.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if words and words[0].upper() == "FROM":
            args = [w for w in words[1:] if not w.startswith("--")]
            name = args[2] if len(args) >= 3 and args[1].upper() == "AS" else None
            stages.append((args[0], name))
    return stages


def pinned(image: str) -> bool:
    """An explicit version tag other than latest, or a digest.

    >>> [pinned(i) for i in ("python:3.11.13-slim", "nginx", "nginx:latest", "a/b@sha256:ab")]
    [True, False, False, True]
    """
    if "@sha256:" in image:
        return True
    _, colon, tag = image.rpartition(":")
    return bool(colon) and "/" not in tag and tag not in ("", "latest")


def commands(service: dict[str, Any]) -> list[str]:
    """Every string of a service's command, entrypoint and healthcheck test."""
    words: list[str] = []
    for key in ("command", "entrypoint"):
        value = service.get(key, [])
        words += [value] if isinstance(value, str) else list(value)
    test = service.get("healthcheck", {}).get("test", [])
    words += [test] if isinstance(test, str) else list(test)
    return words


def test_keys_are_those_of_the_compose_specification() -> None:
    document = compose()
    for key in document:
        assert key in TOP_LEVEL_KEYS or key.startswith("x-"), f"top-level key {key!r}"
    for name, service in services().items():
        for key in service:
            assert key in SERVICE_KEYS or key.startswith("x-"), f"service {name}: key {key!r}"
        for other, how in (service.get("depends_on") or {}).items():
            assert how["condition"] in DEPENDS_ON_CONDITIONS, f"service {name} on {other}"


def test_every_image_is_pinned_by_version() -> None:
    for name, service in services().items():
        image = service.get("image")
        assert image, f"service {name} names no image (give built images a versioned tag too)"
        assert pinned(image), f"service {name}: image {image!r} is not pinned by version"
    stages: list[str] = []
    for base, stage in dockerfile_stages(DOCKERFILE):
        assert base in stages or pinned(base), f"Dockerfile: FROM {base} is not pinned"
        if stage:
            stages.append(stage)


def test_every_build_context_and_target_exists() -> None:
    built = 0
    for name, service in services().items():
        build = service.get("build")
        if build is None:
            continue
        built += 1
        if isinstance(build, str):
            build = {"context": build}
        context = REPO / build.get("context", ".")
        assert context.is_dir(), f"service {name}: build context {context} does not exist"
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"service {name}: {dockerfile} does not exist"
        target = build.get("target")
        if target:
            names = [stage for _, stage in dockerfile_stages(dockerfile)]
            assert target in names, f"service {name}: no stage {target!r} in {dockerfile}"
    assert built, "no service is built from this repository"


def test_every_volume_source_and_config_file_exists() -> None:
    document = compose()
    named = set(document.get("volumes") or {})
    configs = document.get("configs") or {}
    for name, definition in configs.items():
        assert (REPO / definition["file"]).is_file(), f"config {name}: {definition['file']}"
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"service {name}: volume source {source}"
            else:
                assert source in named, f"service {name}: volume {source} is not declared"
        for entry in service.get("configs", []):
            source = entry["source"] if isinstance(entry, dict) else entry
            assert source in configs, f"service {name}: config {source} is not declared"


def test_services_refer_to_services_and_networks_that_exist() -> None:
    document = compose()
    all_services = services()
    networks = set(document.get("networks") or {})
    for name, service in all_services.items():
        mode = service.get("network_mode", "")
        if mode.startswith("service:"):
            assert mode.removeprefix("service:") in all_services, f"service {name}: {mode}"
            assert "networks" not in service and "ports" not in service, name
        for other in service.get("depends_on", {}):
            assert other in all_services, f"service {name} depends on unknown {other}"
        for network in service.get("networks", {}):
            assert network in networks, f"service {name}: network {network} is not declared"


def test_fixtures_named_by_the_services_exist() -> None:
    named = 0
    for name, service in services().items():
        for word in commands(service):
            for match in LAB_PATH.finditer(word):
                if match.group(1) == "fixtures":
                    named += 1
                    relative = match.group(0).removeprefix("/lab/fixtures/")
                    assert (LAB / relative).exists(), f"service {name}: {match.group(0)}"
    assert named, "no service runs anything from fixtures/lab"


def test_generated_files_named_by_the_services_exist(lab_material: LabMaterial) -> None:
    """What the services read from /lab/gen is what make_zones.py writes there."""
    settings = config.load(LAB / "delivery.toml", environ={})
    wanted = {settings.tls.ca_file or ""}
    for service in services().values():
        for word in commands(service):
            wanted |= {m.group(0) for m in LAB_PATH.finditer(word) if m.group(1) == "gen"}
    for path in sorted(wanted):
        assert path.startswith("/lab/gen/"), path
        assert (lab_material.out / path.removeprefix("/lab/gen/")).exists(), path


def test_fixed_addresses_are_those_make_zones_writes_into_the_zones() -> None:
    make_zones = load_make_zones()
    subnets = [
        ipaddress.ip_network(entry["subnet"])
        for network in compose()["networks"].values()
        for entry in network["ipam"]["config"]
    ]
    assert [str(s) for s in subnets] == [make_zones.DEFAULT_NETWORK]
    fixed = {}
    for name, service in services().items():
        for network in (service.get("networks") or {}).values():
            if network and "ipv4_address" in network:
                fixed[name] = network["ipv4_address"]
    assert set(fixed) == set(SERVICE_ROLES)
    for name, address in fixed.items():
        assert address == make_zones.DEFAULT_ADDRESSES[SERVICE_ROLES[name]], name
        assert ipaddress.ip_address(address) in subnets[0], name


def test_engine_settings_point_at_the_lab() -> None:
    make_zones = load_make_zones()
    settings = config.load(LAB / "delivery.toml", environ={})
    resolver = f"{make_zones.DEFAULT_ADDRESSES['resolver']}:{make_zones.DEFAULT_PORTS['resolver']}"
    assert settings.dns.nameservers == [resolver]
    assert settings.dns.dnssec == "trust-ad"
    assert settings.dns.dnssec_probe.rstrip(".") == make_zones.PARENT
    assert settings.smtp.port == make_zones.DEFAULT_PORTS["smtp"]
    assert settings.tls.ca_file == "/lab/gen/ca.pem"
    network = ipaddress.ip_network(make_zones.DEFAULT_NETWORK)
    assert any(ipaddress.ip_network(n) == network for n in settings.submission.networks)
    # The engine container finds the file where `delivery send` looks: ./delivery.toml.
    engine = services()["engine"]
    targets = [c["target"] for c in engine["configs"] if c["source"] == "engine-settings"]
    workdirs = _stage_workdirs(DOCKERFILE)
    assert targets == [f"{workdirs[engine['build']['target']]}/delivery.toml"]


def _stage_workdirs(path: Path) -> dict[str, str]:
    """The last WORKDIR of each named stage (inherited by stages built FROM another)."""
    workdirs: dict[str, str] = {}
    current: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if words and words[0].upper() == "FROM":
            current = words[-1] if len(words) >= 4 and words[-2].upper() == "AS" else None
            if current and words[1] in workdirs:
                workdirs[current] = workdirs[words[1]]
        elif words and words[0].upper() == "WORKDIR" and current:
            workdirs[current] = words[1]
    return workdirs


def test_dockerignore_keeps_what_the_dockerfile_copies() -> None:
    ignored = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = []
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if words and words[0].upper() == "COPY":
            copied += [w for w in words[1:-1] if not w.startswith("--")]
    assert copied
    for source in copied:
        assert (REPO / source).exists(), f"Dockerfile copies {source}, which does not exist"
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source


def test_harness_service_serves_faults_test_where_unbound_asks() -> None:
    make_zones = load_make_zones()
    harness = services()["harness"]
    argv = commands(harness)
    assert argv[:3] == ["harness", "run", "/lab/fixtures/faults.toml"]
    assert argv[argv.index("--dns-port") + 1] == str(make_zones.DEFAULT_PORTS["harness-dns"])
    assert argv[argv.index("--smtp-port") + 1] == str(make_zones.DEFAULT_PORTS["smtp"])
    assert harness["network_mode"] == services()["engine"]["network_mode"]
    unbound = (LAB / "templates" / "unbound.conf").read_text(encoding="utf-8")
    stub = 'name: "faults.test"\n    stub-addr: {{harness_dns_addr}}@{{harness_dns_port}}'
    assert stub in unbound
    faults = scenario.load(LAB / "faults.toml")
    assert faults.domains
    for domain in faults.domains:
        assert domain.name.endswith(".faults.test"), domain.name
    for host in faults.hosts.values():
        if host.down:
            continue
        # The engine trusts the lab CA, not the harness's: a "valid" harness certificate
        # would fail for a reason that is not the fault the domain shows.
        assert host.tls != "valid", f"{host.name}: give it tls = 'none' or a faulty kind"


def test_harness_lab_scenario_is_the_compose_lab() -> None:
    """fixtures/lab/lab.toml (`delivery harness run`, no docker) shows what compose shows."""
    make_zones = load_make_zones()
    mirror = scenario.load(LAB / "lab.toml")
    assert [d.name for d in mirror.domains] == [d.name for d in make_zones.DOMAINS]
    kinds = {"valid": "valid", "self-signed": "self-signed", "none": "none"}
    for domain, lab_domain in zip(mirror.domains, make_zones.DOMAINS, strict=True):
        assert [mx.name for mx in domain.mx] == [lab_domain.mx], domain.name
        assert domain.dnssec == lab_domain.dnssec, domain.name
        policy = _policy_fields(domain.mta_sts.policy.body) if domain.mta_sts else {}
        assert policy.get("mode") == lab_domain.mta_sts, domain.name
        if lab_domain.mta_sts:
            assert policy["mx"] == [lab_domain.mx], domain.name
    for name, host in make_zones.HOSTS.items():
        twin = mirror.hosts[name]
        receiver = make_zones.RECEIVERS[host.receiver]
        assert twin.tls == kinds[receiver.tls], name
        assert twin.intermediate == (receiver.tls == "valid"), name
        tlsa = [f"{t.usage} {t.selector} {t.mtype} {t.origin}" for t in twin.tlsa]
        assert tlsa == list(host.tlsa), name


def _policy_fields(body: str) -> dict[str, Any]:
    """An MTA-STS policy's mode, and its mx lines as a list."""
    fields: dict[str, Any] = {"mx": []}
    for line in body.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "mx":
            fields["mx"].append(value.strip())
        elif key.strip() == "mode":
            fields["mode"] = value.strip()
    return fields


def test_the_lab_readme_lists_every_lab_domain() -> None:
    readme = (LAB / "README.md").read_text(encoding="utf-8")
    for domain in load_make_zones().DOMAINS:
        assert f"| {domain.name} | {domain.mx.removesuffix('.lab.test')}" in readme, domain.name
