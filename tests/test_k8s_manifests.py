"""The Kubernetes manifests in envoy/k8s: structure, consistency with the code, schemas.

The files are read with PyYAML and checked against what the server and the Envoy
bootstrap expect (ports, settings, grace periods, mounts). When `kubectl` is on PATH
the kustomizations are also rendered, and when kubernetes-validate is installed every
object is validated against the Kubernetes API schemas, offline.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "envoy" / "k8s"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "example"
MTLS = K8S / "overlays" / "mtls"
KUBECTL = shutil.which("kubectl")
# The oldest Kubernetes with native sidecars on by default and GA, and the newest the
# validator knows.
SCHEMA_VERSIONS = ("1.33.0", "latest")
SERVICE_UID = 10001  # the Dockerfile's USER

Obj = dict[str, Any]


def _load(path: Path) -> list[Obj]:
    """Every document of a YAML file, empty ones dropped."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _kustomization(directory: Path) -> Obj:
    """A directory's kustomization.yaml."""
    (doc,) = _load(directory / "kustomization.yaml")
    return doc


def _base_objects() -> list[Obj]:
    """The objects the base lists under resources, as written."""
    return [obj for name in _kustomization(BASE)["resources"] for obj in _load(BASE / name)]


def _one(objects: list[Obj], kind: str) -> Obj:
    """The single object of a kind."""
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


OBJECTS = _base_objects()
DEPLOYMENT = _one(OBJECTS, "Deployment")
POD = DEPLOYMENT["spec"]["template"]["spec"]
POD_LABELS = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
CONTAINERS = {c["name"]: c for c in POD["initContainers"] + POD["containers"]}
GUARD = CONTAINERS["distill-guard"]
ENVOY = CONTAINERS["envoy"]
BOOTSTRAP = yaml.safe_load((ROOT / "envoy" / "sidecar.yaml").read_text())


def _env(container: Obj) -> dict[str, Obj]:
    """A container's env entries by name."""
    return {e["name"]: e for e in container.get("env", [])}


def _env_value(container: Obj, name: str) -> str:
    """A literal env value (not from a reference)."""
    value = _env(container)[name]["value"]
    assert isinstance(value, str), f"{name} must be a string in YAML, got {value!r}"
    return value


def _cluster_port(name: str) -> int:
    """The port of a STATIC cluster's only endpoint in the Envoy bootstrap."""
    (cluster,) = [c for c in BOOTSTRAP["static_resources"]["clusters"] if c["name"] == name]
    (endpoints,) = cluster["load_assignment"]["endpoints"]
    (lb,) = endpoints["lb_endpoints"]
    return int(lb["endpoint"]["address"]["socket_address"]["port_value"])


def _listener_port() -> int:
    """The Envoy bootstrap's one listener port."""
    (listener,) = BOOTSTRAP["static_resources"]["listeners"]
    return int(listener["address"]["socket_address"]["port_value"])


# --- the kustomization --------------------------------------------------------------------


def _referenced(directory: Path) -> set[Path]:
    """Every local file a kustomization names: resources, generator files, patches."""
    doc = _kustomization(directory)
    names = [r for r in doc.get("resources", []) if not r.startswith("..")]
    for generator in doc.get("configMapGenerator", []) + doc.get("secretGenerator", []):
        names += [f.partition("=")[2] or f for f in generator.get("files", [])]
    names += [p["path"] for p in doc.get("patches", []) if "path" in p]
    return {(directory / n).resolve() for n in names}


@pytest.mark.parametrize("directory", [BASE, OVERLAY, MTLS], ids=["base", "overlay", "mtls"])
def test_kustomization_lists_every_file(directory: Path) -> None:
    """Each file of the directory is used by its kustomization, and each one named exists."""
    referenced = _referenced(directory)
    for path in referenced:
        assert path.is_file(), f"{path.relative_to(ROOT)} is named but missing"
    present = {p.resolve() for p in directory.rglob("*") if p.is_file()}
    present.discard((directory / "kustomization.yaml").resolve())
    unused = sorted(str(p.relative_to(ROOT)) for p in present - referenced)
    assert not unused, f"not referenced by {directory.name}/kustomization.yaml: {unused}"


def test_base_holds_no_secret_and_every_kind_it_needs() -> None:
    """The base defines the workload, its Service, policy and budget, and never a Secret."""
    kinds = sorted(o["kind"] for o in OBJECTS)
    assert kinds == sorted(
        ["Deployment", "NetworkPolicy", "PodDisruptionBudget", "Service", "ServiceAccount"]
    )
    assert not _kustomization(BASE).get("secretGenerator")


def test_envoy_bootstrap_configmap_is_envoy_sidecar_yaml() -> None:
    """The ConfigMap's bootstrap is envoy/sidecar.yaml byte for byte (kustomize needs a copy)."""
    copy = BASE / "config" / "sidecar.yaml"
    assert copy.read_bytes() == (ROOT / "envoy" / "sidecar.yaml").read_bytes(), (
        "envoy/k8s/base/config/sidecar.yaml differs from envoy/sidecar.yaml; refresh it with\n"
        "  cp envoy/sidecar.yaml envoy/k8s/base/config/sidecar.yaml"
    )
    generators = {g["name"]: g for g in _kustomization(BASE)["configMapGenerator"]}
    assert generators["envoy-sidecar"]["files"] == ["config/sidecar.yaml"]
    # Envoy does not reload its bootstrap: a change must get a new name and roll the pods.
    assert not generators["envoy-sidecar"].get("options", {}).get("disableNameSuffixHash")
    args = ENVOY["args"]
    assert args[args.index("-c") + 1] == "/etc/envoy/sidecar.yaml"


def test_rules_configmap_passes_rules_check_and_updates_in_place() -> None:
    """The rules file passes `distill-guard rules check`; its ConfigMap keeps one name."""
    generators = {g["name"]: g for g in _kustomization(BASE)["configMapGenerator"]}
    rules = generators["distill-guard-rules"]
    assert rules["options"]["disableNameSuffixHash"] is True  # edits reach running pods
    (path,) = rules["files"]
    done = subprocess.run(
        [sys.executable, "-m", "authz", "rules", "check", str(BASE / path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert _env_value(GUARD, "DISTILL_GUARD_RULES").endswith("/" + Path(path).name)


# --- the pod -----------------------------------------------------------------------------


def test_configuration_is_mounted_as_directories() -> None:
    """Rules, secrets and GeoIP come from directory mounts (no subPath), so updates arrive."""
    for container in CONTAINERS.values():
        for mount in container.get("volumeMounts", []):
            assert "subPath" not in mount and "subPathExpr" not in mount, (
                f"{container['name']} mounts {mount['name']} with subPath: never updated"
            )
    mounts = {m["mountPath"]: m for m in GUARD["volumeMounts"]}
    volumes = {v["name"]: v for v in POD["volumes"]}
    expected = {
        "DISTILL_GUARD_RULES": "configMap",
        "DISTILL_GUARD_ACCOUNTS": "secret",
        "DISTILL_GUARD_KEY_PEPPER_FILE": "secret",
        "DISTILL_GUARD_GEOIP": "emptyDir",
        "DISTILL_GUARD_ASN": "emptyDir",
    }
    for setting, kind in expected.items():
        directory = str(Path(_env_value(GUARD, setting)).parent)
        assert directory in mounts, f"{setting}: nothing is mounted at {directory}"
        mount = mounts[directory]
        assert mount["readOnly"] is True, setting
        assert kind in volumes[mount["name"]], f"{setting} should come from a {kind}"
    # The GeoIP updater writes into the very volume distill-guard reads.
    geo = mounts[str(Path(_env_value(GUARD, "DISTILL_GUARD_GEOIP")).parent)]["name"]
    for name in ("geoip-init", "geoipupdate"):
        (writer,) = [m for m in CONTAINERS[name]["volumeMounts"] if m["name"] == geo]
        assert writer["mountPath"] == _env_value(CONTAINERS[name], "GEOIPUPDATE_DB_DIR")


def test_secrets_are_referenced_never_inlined() -> None:
    """The store URL, accounts and pepper come from Secrets; no env value holds a credential."""
    store = _env(GUARD)["DISTILL_GUARD_STORE"]
    assert store["valueFrom"]["secretKeyRef"] == {"name": "distill-guard", "key": "redis-url"}
    secret_volumes = [v for v in POD["volumes"] if "secret" in v]
    (guard_secret,) = [v for v in secret_volumes if v["secret"]["secretName"] == "distill-guard"]
    keys = {item["key"] for item in guard_secret["secret"]["items"]}
    assert keys == {"accounts.jsonl", "key-pepper"}  # the Redis URL is not a file
    for container in CONTAINERS.values():
        for entry in container.get("env", []):
            value = str(entry.get("value", ""))
            assert not re.search(r"(redis|rediss)://|://[^/\s]*:[^/\s]*@", value), entry
            if re.search(r"KEY|TOKEN|PASSWORD|SECRET|PEPPER", entry["name"]):
                assert "value" not in entry or entry["value"].startswith("/"), entry


def test_probes_speak_grpc_health_to_the_ext_authz_port() -> None:
    """distill-guard's startup, readiness and liveness probes are gRPC health checks."""
    port = int(_env_value(GUARD, "DISTILL_GUARD_LISTEN").rpartition(":")[2])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert GUARD[probe]["grpc"] == {"port": port}, probe
    # The start-up probe allows longer than readiness: start-up waits for Redis.
    startup = GUARD["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60
    for probe in ("readinessProbe", "livenessProbe"):
        assert ENVOY[probe]["tcpSocket"]["port"] == _listener_port(), probe


def test_ports_agree_with_the_envoy_bootstrap() -> None:
    """Envoy's cluster reaches distill-guard's port; Service and policy use Envoy's listener."""
    listen = _env_value(GUARD, "DISTILL_GUARD_LISTEN")
    assert listen == f"0.0.0.0:{_cluster_port('distill_guard')}"  # the kubelet probes the pod IP
    assert _env_value(GUARD, "DISTILL_GUARD_ADMIN_LISTEN").startswith("127.0.0.1:")
    (http,) = ENVOY["ports"]
    assert http["containerPort"] == _listener_port()
    service = _one(OBJECTS, "Service")
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == http["name"]
    assert service["spec"]["selector"] == POD_LABELS


def test_check_budget_stays_below_envoys_timeout() -> None:
    """--check-budget is below Envoy's ext_authz timeout, and Envoy fails closed."""
    listener = BOOTSTRAP["static_resources"]["listeners"][0]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    (authz_filter,) = [f for f in manager["http_filters"] if f["name"].endswith("ext_authz")]
    config = authz_filter["typed_config"]
    assert config["failure_mode_allow"] is False
    timeout = float(config["grpc_service"]["timeout"].removesuffix("s"))
    assert float(_env_value(GUARD, "DISTILL_GUARD_CHECK_BUDGET")) < timeout


def test_settings_variables_exist() -> None:
    """Every DISTILL_GUARD_* variable in the manifests names a real setting."""
    known = {"DISTILL_GUARD_" + f.upper() for f in Settings.__dataclass_fields__}
    known |= {"DISTILL_GUARD_ADMIN_TOKEN", "DISTILL_GUARD_METRICS_LISTEN"}
    for container in CONTAINERS.values():
        for name in _env(container):
            if name.startswith("DISTILL_GUARD_"):
                assert name in known, f"{container['name']}: {name} is no setting"


def test_telemetry_goes_to_a_collector() -> None:
    """distill-guard exports OTLP with a service name, to where Envoy sends its spans."""
    endpoint = _env_value(GUARD, "OTEL_EXPORTER_OTLP_ENDPOINT")
    assert endpoint == f"http://127.0.0.1:{_cluster_port('otel_collector')}"
    assert _env_value(GUARD, "OTEL_SERVICE_NAME") == "distill-guard"


def test_security_context_is_restricted() -> None:
    """Non-root 10001 with RuntimeDefault seccomp; every container read-only, no privileges."""
    pod = POD["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == SERVICE_UID and pod["runAsGroup"] == SERVICE_UID
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert POD["automountServiceAccountToken"] is False
    for name, container in CONTAINERS.items():
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["runAsNonRoot"] is True, name
        assert context["capabilities"] == {"drop": ["ALL"]}, name
        assert not context.get("privileged"), name
        assert context.get("runAsUser", SERVICE_UID) != 0, name


_UNITS = {"m": 1e-3, "": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def _quantity(value: str | int) -> float:
    """A Kubernetes quantity (250m, 1, 512Mi) as a number."""
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert match, f"not a quantity: {value!r}"
    number, unit = match.groups()
    return float(number) * _UNITS[unit]


def test_every_container_has_requests_and_limits() -> None:
    """CPU and memory requests and limits on every container, requests never above limits."""
    for name, container in CONTAINERS.items():
        resources = container["resources"]
        for resource in ("cpu", "memory"):
            request = _quantity(resources["requests"][resource])
            limit = _quantity(resources["limits"][resource])
            assert 0 < request <= limit, f"{name} {resource}"
    # The sizing in docs/deploy.md: a quarter core for ~50 checks/s, at most one core.
    guard = GUARD["resources"]
    assert _quantity(guard["requests"]["cpu"]) == 0.25
    assert _quantity(guard["limits"]["cpu"]) == 1


def test_distill_guard_starts_first_and_stops_last() -> None:
    """distill-guard is a native sidecar after the GeoIP fill, so Envoy never runs without it."""
    init = [c["name"] for c in POD["initContainers"]]
    assert init.index("geoip-init") < init.index("distill-guard")
    assert "restartPolicy" not in CONTAINERS["geoip-init"]  # runs to completion first
    assert GUARD["restartPolicy"] == "Always"
    assert CONTAINERS["geoipupdate"]["restartPolicy"] == "Always"
    assert {c["name"] for c in POD["containers"]} == {"envoy", "model-api"}


def test_termination_grace_covers_the_shutdown_sequence() -> None:
    """The pod's grace period outlasts the preStop sleeps plus distill-guard's two grace periods.

    On SIGTERM distill-guard lets checks finish within --grace, then gives the audit queue
    another --grace (docs/audit.md); as a native sidecar it is stopped only after the
    main containers' preStop hooks and shutdown.
    """
    grace = float(_env_value(GUARD, "DISTILL_GUARD_GRACE"))
    sleeps = [c["lifecycle"]["preStop"]["sleep"]["seconds"] for c in POD["containers"]]
    assert POD["terminationGracePeriodSeconds"] > max(sleeps) + 2 * grace
    model_api, envoy = CONTAINERS["model-api"], ENVOY
    # The model server outlives Envoy's drain, so Envoy never forwards to a closed port.
    model_sleep = model_api["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert model_sleep > envoy["lifecycle"]["preStop"]["sleep"]["seconds"]


def test_network_policy_admits_only_envoys_listener() -> None:
    """Ingress to the pods is Envoy's port only: 9191, 9192, 8000 and 9901 are never admitted."""
    policy = _one(OBJECTS, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"] == POD_LABELS
    assert policy["policyTypes"] == ["Ingress"]
    ports = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
    assert ports == {_listener_port()}
    for rule in policy["ingress"]:
        assert rule["ports"], "a rule without ports admits every port"


def test_pod_disruption_budget_matches_and_allows_drains() -> None:
    """The PDB selects the pods and lets one go at a time without blocking drains."""
    pdb = _one(OBJECTS, "PodDisruptionBudget")["spec"]
    assert pdb["selector"]["matchLabels"] == POD_LABELS
    assert pdb["maxUnavailable"] == 1 and "minAvailable" not in pdb
    assert DEPLOYMENT["spec"]["replicas"] >= 2
    assert DEPLOYMENT["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


# --- rendered by kustomize, validated against the API schemas ---------------------------


def _render(directory: Path) -> list[Obj]:
    """`kubectl kustomize DIRECTORY`, parsed."""
    if KUBECTL is None:
        pytest.skip("kubectl is not installed: the kustomizations are not rendered")
    done = subprocess.run(
        [KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def test_rendered_base_wires_the_generated_configmaps() -> None:
    """Rendered, the bootstrap ConfigMap holds envoy/sidecar.yaml and the pod mounts it."""
    objects = _render(BASE)
    configmaps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    envoy_name = next(n for n in configmaps if n.startswith("envoy-sidecar-"))
    sidecar = (ROOT / "envoy" / "sidecar.yaml").read_text()
    assert configmaps[envoy_name]["data"] == {"sidecar.yaml": sidecar}
    assert set(configmaps["distill-guard-rules"]["data"]) == {"rules.yaml"}
    pod = _one(objects, "Deployment")["spec"]["template"]["spec"]
    mounted = {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
    assert mounted == {envoy_name, "distill-guard-rules"}
    for container in pod["initContainers"] + pod["containers"]:
        image = container["image"]
        assert re.fullmatch(r"[a-z0-9.-]+\.[a-z]+/[\w./-]+(:[\w.-]+|@sha256:[0-9a-f]{64})", image)
        assert not image.endswith(":latest"), image


@pytest.mark.parametrize("directory", [BASE, OVERLAY], ids=["base", "overlay"])
def test_rendered_objects_match_the_kubernetes_schemas(directory: Path) -> None:
    """Every rendered object validates (strictly: no unknown fields) against the API schemas."""
    validator = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (test extra)"
    )
    objects = _render(directory)
    versions = [v for v in SCHEMA_VERSIONS if v != "latest"] + [validator.latest_version()]
    problems = []
    for version in versions:
        for obj in objects:
            try:
                validator.validate(obj, version, strict=True)
            except validator.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                problems.append(
                    f"{obj['kind']}/{obj['metadata']['name']} ({version}) {where}: {exc.message}"
                )
    assert not problems, "\n".join(problems)


def test_overlay_keeps_the_collector_ahead_of_distill_guard() -> None:
    """The example overlay's collector agent starts before distill-guard, in the namespace."""
    objects = _render(OVERLAY)
    assert {o["metadata"].get("namespace") for o in objects} == {"model-api"}
    pod = _one(objects, "Deployment")["spec"]["template"]["spec"]
    init = [c["name"] for c in pod["initContainers"]]
    assert init.index("otel-collector") < init.index("distill-guard")
    collector = next(c for c in pod["initContainers"] if c["name"] == "otel-collector")
    assert collector["restartPolicy"] == "Always"
    config = next(
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("otel")
    )
    receiver = yaml.safe_load(config["data"]["otel-collector.yaml"])["receivers"]["otlp"]
    assert (
        receiver["protocols"]["grpc"]["endpoint"] == f"127.0.0.1:{_cluster_port('otel_collector')}"
    )


# --- the mTLS overlay (docs/tls.md) -------------------------------------------------------

CERT_MANAGER = "cert-manager.io/v1"


def test_mtls_overlay_envoy_files_are_current(tmp_path: Path) -> None:
    """The overlay's Envoy bootstrap and SDS files are what `tls envoy-config` writes today."""
    from authz.cli import main

    certs, sds = "/etc/envoy-tls", "/etc/envoy"
    argv = ["tls", "envoy-config", "--certs", certs, "--sds-dir", sds, "--out", str(tmp_path)]
    assert main(argv) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(p.name for p in (MTLS / "config").iterdir())
    for name in written:
        assert yaml.safe_load((MTLS / "config" / name).read_text()) == yaml.safe_load(
            (tmp_path / name).read_text()
        ), (
            f"envoy/k8s/overlays/mtls/config/{name} is stale; refresh it with\n"
            f"  distill-guard tls envoy-config --certs {certs} --sds-dir {sds} "
            "--out envoy/k8s/overlays/mtls/config"
        )


def _by_kind(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _secret_mounts(pod: Obj, container: Obj) -> dict[str, str]:
    """A container's Secret mounts: mount path -> Secret name."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    return {
        m["mountPath"]: volumes[m["name"]]["secret"]["secretName"]
        for m in container.get("volumeMounts", [])
        if "secret" in volumes[m["name"]]
    }


def test_mtls_overlay_wires_certificates_to_both_sides() -> None:
    """cert-manager's Secrets reach distill-guard and Envoy as directories, names agree.

    distill-guard's server certificate carries the name Envoy sends as SNI and
    accepts; both leaf certificates come from one CA; distill-guard's TLS files
    and Envoy's SDS files point into the mounted Secrets; the probes ask the
    plaintext health port, and ext_authz listens on loopback only.
    """
    objects = _render(MTLS)
    certificates = _by_kind(objects, "Certificate")
    issuers = _by_kind(objects, "Issuer")
    assert {o["apiVersion"] for o in [*certificates.values(), *issuers.values()]} == {CERT_MANAGER}
    server, client = certificates["distill-guard-server"], certificates["envoy-authz-client"]
    ca = certificates["distill-guard-ca"]
    assert ca["spec"]["isCA"] is True
    assert issuers["distill-guard-ca"]["spec"]["ca"]["secretName"] == ca["spec"]["secretName"]
    for leaf, usage in ((server, "server auth"), (client, "client auth")):
        assert leaf["spec"]["issuerRef"]["name"] == "distill-guard-ca"
        assert usage in leaf["spec"]["usages"]
        assert leaf["spec"]["privateKey"]["rotationPolicy"] == "Always"

    pod = _one(objects, "Deployment")["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["initContainers"] + pod["containers"]}
    guard, envoy = containers["distill-guard"], containers["envoy"]
    guard_secrets = _secret_mounts(pod, guard)
    for setting in ("TLS_CERT", "TLS_KEY", "TLS_CLIENT_CA"):
        directory = str(Path(_env_value(guard, f"DISTILL_GUARD_{setting}")).parent)
        assert guard_secrets[directory] == server["spec"]["secretName"], setting

    configmap = next(
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("envoy")
    )
    bootstrap = yaml.safe_load(configmap["data"]["sidecar.yaml"])
    (cluster,) = [
        c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "distill_guard"
    ]
    context = cluster["transport_socket"]["typed_config"]
    validation = context["common_tls_context"]["combined_validation_context"]
    (san,) = validation["default_validation_context"]["match_typed_subject_alt_names"]
    assert context["sni"] == san["matcher"]["exact"]
    assert context["sni"] in server["spec"]["dnsNames"]
    envoy_secrets = _secret_mounts(pod, envoy)
    (config_mount,) = [m for m in envoy["volumeMounts"] if m["name"] == "envoy-config"]
    for name in ("distill-guard-client.sds.yaml", "distill-guard-ca.sds.yaml"):
        (secret,) = yaml.safe_load(configmap["data"][name])["resources"]
        body = secret.get("tls_certificate") or secret["validation_context"]
        watched = body["watched_directory"]["path"]
        assert envoy_secrets[watched] == client["spec"]["secretName"], name
    sds_paths = [
        *[
            c["sds_config"]
            for c in context["common_tls_context"]["tls_certificate_sds_secret_configs"]
        ],
        validation["validation_context_sds_secret_config"]["sds_config"],
    ]
    for sds in sds_paths:
        path = Path(sds["path_config_source"]["path"])
        assert str(path.parent) == config_mount["mountPath"] and path.name in configmap["data"]

    assert _env_value(guard, "DISTILL_GUARD_LISTEN").startswith("127.0.0.1:")
    health_port = int(_env_value(guard, "DISTILL_GUARD_HEALTH_LISTEN").rpartition(":")[2])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert guard[probe]["grpc"] == {"port": health_port}, probe
    assert [p["containerPort"] for p in guard["ports"]] == [health_port]
    known = {"DISTILL_GUARD_" + f.upper() for f in Settings.__dataclass_fields__}
    assert {n for n in _env(guard) if n.startswith("DISTILL_GUARD_")} <= known | {
        "DISTILL_GUARD_ADMIN_TOKEN"
    }


def test_mtls_overlay_builtin_objects_match_the_kubernetes_schemas() -> None:
    """The overlay's Kubernetes objects validate strictly (cert-manager's kinds are CRDs)."""
    validator = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (test extra)"
    )
    objects = [o for o in _render(MTLS) if o["apiVersion"] != CERT_MANAGER]
    problems = []
    for version in [v for v in SCHEMA_VERSIONS if v != "latest"] + [validator.latest_version()]:
        for obj in objects:
            try:
                validator.validate(obj, version, strict=True)
            except validator.ValidationError as exc:
                problems.append(
                    f"{obj['kind']}/{obj['metadata']['name']} ({version}): {exc.message}"
                )
    assert not problems, "\n".join(problems)
