"""From a pod object to what the launcher needs: command, environment, volumes.

Pure functions over plain dicts; the Store is reached only through the ``Lookup``
callable (``lookup(resource, namespace, name) -> dict | None``), so everything here is
unit-tested without a cluster.
"""

from __future__ import annotations

import base64
import math
import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Lookup = Callable[[str, str, str], "dict | None"]

ECHO_IMAGES = {
    "ghcr.io/telepresenceio/echo-server",
    "jmalloc/echo-server",
    "docker.io/jmalloc/echo-server",
}
ECHO_SCRIPT = str(Path(__file__).with_name("echo.py"))
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


class PodRefused(Exception):
    """The pod asks for something this node never does (hostPath, hostPID, privileged)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class ContainerConfigError(Exception):
    """A referenced ConfigMap/Secret/key is missing (kubelet: CreateContainerConfigError)."""


class ImageError(Exception):
    """An image we cannot map to a command (waiting reason ErrImagePull)."""


def image_repository(image: str) -> str:
    """``registry/path/name`` without tag or digest."""
    repo = image.split("@", 1)[0]
    last_slash = repo.rfind("/")
    colon = repo.rfind(":")
    if colon > last_slash:
        repo = repo[:colon]
    return repo


def image_name(image: str) -> str:
    """The last path component before the tag (``tpengine`` for ``x/tpengine:0.1``)."""
    return image_repository(image).rsplit("/", 1)[-1]


def command_for(container: dict, *, python: str = sys.executable) -> list[str]:
    """The argv a container runs (image rules of DESIGN.md, "Names and interfaces")."""
    image = container.get("image") or ""
    command = list(container.get("command") or [])
    args = list(container.get("args") or [])
    if image_repository(image) in ECHO_IMAGES and not command:
        return [python, ECHO_SCRIPT]
    if command:
        return command + args
    if args and image_name(image) != "tpengine":
        return args  # an image without an entrypoint runs its args (CMD) as given
    raise ImageError(
        f'image "{image}" has no command this node can run: the local cluster runs no '
        "container images, only echo-server images, …/tpengine images and pods whose "
        "containers give a command"
    )


def path_for(container: dict, *, venv_bin: str) -> str:
    """PATH: tpengine images run from the local cluster's own Python environment."""
    if image_name(container.get("image") or "") == "tpengine":
        return f"{venv_bin}:{DEFAULT_PATH}"
    return DEFAULT_PATH


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: ``$$`` escapes, unknown references stay as written."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env.get(name, m.group(0))

    return _VAR.sub(sub, text)


def refuse_reason(pod: dict) -> PodRefused | None:
    """Why this node refuses the pod, or None. Each is a clear pod status, never a crash."""
    spec = pod.get("spec", {})
    if spec.get("hostPID"):
        return PodRefused(
            "HostPIDNotSupported", "hostPID pods are not supported by the local cluster"
        )
    for vol in spec.get("volumes") or []:
        if "hostPath" in vol:
            return PodRefused(
                "HostPathNotSupported",
                f'volume "{vol.get("name")}": hostPath volumes are not supported by the local cluster',
            )
    for kind in ("initContainers", "containers"):
        for c in spec.get(kind) or []:
            if (c.get("securityContext") or {}).get("privileged"):
                return PodRefused(
                    "PrivilegedNotSupported",
                    f'container "{c.get("name")}": privileged containers are not supported by the local cluster',
                )
    return None


# ---------------------------------------------------------------------------- env


def _field_value(pod: dict, path: str) -> str:
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": status.get("hostIP"),
        "status.podIP": status.get("podIP"),
        "status.podIPs": ",".join(p.get("ip", "") for p in status.get("podIPs") or []),
    }
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    if path not in simple:
        raise ContainerConfigError(f"unsupported fieldRef {path!r}")
    return str(simple[path] or "")


_SUFFIX = {
    "m": 0.001,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def parse_quantity(text: str) -> float:
    """A Kubernetes resource.Quantity ("500m", "128Mi", "1e3", "2")."""
    text = str(text).strip()
    for suffix in sorted(_SUFFIX, key=len, reverse=True):
        if text.endswith(suffix) and text[: -len(suffix)]:
            return float(text[: -len(suffix)]) * _SUFFIX[suffix]
    return float(text)


def _node_allocatable(resource: str) -> float:
    if resource == "cpu":
        return float(os.cpu_count() or 1)
    try:
        with open("/proc/meminfo") as fh:
            return float(fh.readline().split()[1]) * 1024  # MemTotal, kB
    except (OSError, IndexError, ValueError):
        return 0.0


def resource_field_value(pod: dict, container: dict, ref: dict) -> str:
    """Downward API resourceFieldRef: the limit (or request), else node allocatable for
    limits, rounded up in units of ``divisor`` (Kubernetes "Expose Pod Information")."""
    name = ref.get("containerName")
    if name:
        for c in pod.get("spec", {}).get("containers") or []:
            if c.get("name") == name:
                container = c
    kind, _, resource = str(ref.get("resource", "")).partition(".")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(resource)
    if raw is None and kind == "requests":
        raw = (resources.get("limits") or {}).get(resource)
    amount = (
        parse_quantity(raw)
        if raw is not None
        else (_node_allocatable(resource) if kind == "limits" else 0.0)
    )
    divisor = parse_quantity(ref.get("divisor") or "1")
    return str(math.ceil(amount / divisor)) if divisor else "0"


def _key_ref(lookup: Lookup, ns: str, resource: str, ref: dict) -> str | None:
    obj = lookup(resource, ns, ref.get("name", ""))
    kind = "configmap" if resource == "configmaps" else "secret"
    optional = bool(ref.get("optional"))
    if obj is None:
        if optional:
            return None
        raise ContainerConfigError(f'{kind} "{ref.get("name")}" not found')
    key = ref.get("key", "")
    if resource == "secrets":
        raw = (obj.get("data") or {}).get(key)
        value = (
            base64.b64decode(raw).decode(errors="replace")
            if raw is not None
            else (obj.get("stringData") or {}).get(key)
        )
    else:
        value = (obj.get("data") or {}).get(key)
    if value is None and not optional:
        raise ContainerConfigError(f"couldn't find key {key} in {kind} {ns}/{ref.get('name')}")
    return value


def container_env(
    pod: dict, container: dict, lookup: Lookup, *, service_env: dict[str, str], path: str
) -> dict[str, str]:
    """The environment of one container (kubelet's makeEnvironmentVariables order)."""
    ns = pod["metadata"].get("namespace", "default")
    # HOME as a container runtime would set it, but pointing at the pod's private /tmp:
    # the container sees the host's filesystem, and must not write into the host's /root.
    env: dict[str, str] = {"PATH": path, "HOSTNAME": pod["metadata"]["name"], "HOME": "/tmp"}
    env.update(service_env)
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix", "")
        for resource, key in (("configmaps", "configMapRef"), ("secrets", "secretRef")):
            ref = src.get(key)
            if not ref:
                continue
            obj = lookup(resource, ns, ref.get("name", ""))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'{resource[:-1]} "{ref.get("name")}" not found')
            for k, v in (obj.get("data") or {}).items():
                env[prefix + k] = (
                    base64.b64decode(v).decode(errors="replace") if resource == "secrets" else v
                )
    for var in container.get("env") or []:
        name = var.get("name")
        if not name:
            continue
        if "value" in var or "valueFrom" not in var:
            env[name] = expand(str(var.get("value", "")), env)
            continue
        vf = var["valueFrom"] or {}
        value: str | None
        if "fieldRef" in vf:
            value = _field_value(pod, vf["fieldRef"].get("fieldPath", ""))
        elif "configMapKeyRef" in vf:
            value = _key_ref(lookup, ns, "configmaps", vf["configMapKeyRef"])
        elif "secretKeyRef" in vf:
            value = _key_ref(lookup, ns, "secrets", vf["secretKeyRef"])
        elif "resourceFieldRef" in vf:
            value = resource_field_value(pod, container, vf["resourceFieldRef"])
        else:
            raise ContainerConfigError(f"env {name}: unsupported valueFrom")
        if value is not None:
            env[name] = value
    return env


def service_env(services: list[dict]) -> dict[str, str]:
    """Docker-links style variables for the Services of the pod's namespace (+ kubernetes)."""
    env: dict[str, str] = {}
    for svc in services:
        ip = svc.get("spec", {}).get("clusterIP")
        ports = svc.get("spec", {}).get("ports") or []
        if not ip or ip == "None" or not ports:
            continue
        prefix = svc["metadata"]["name"].upper().replace("-", "_")
        first = ports[0]
        env[f"{prefix}_SERVICE_HOST"] = ip
        env[f"{prefix}_SERVICE_PORT"] = str(first["port"])
        for p in ports:
            if p.get("name"):
                env[f"{prefix}_SERVICE_PORT_{p['name'].upper().replace('-', '_')}"] = str(p["port"])
            proto = p.get("protocol", "TCP")
            base = f"{prefix}_PORT_{p['port']}_{proto}"
            env[base] = f"{proto.lower()}://{ip}:{p['port']}"
            env[f"{base}_PROTO"] = proto.lower()
            env[f"{base}_PORT"] = str(p["port"])
            env[f"{base}_ADDR"] = ip
        env[f"{prefix}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"
    return env


# ------------------------------------------------------------------------- volumes


@dataclass(frozen=True, kw_only=True)
class VolumeContext:
    pod: dict
    lookup: Lookup
    token: str
    ca_pem: bytes


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)


def _key_files(obj: dict | None, items: list[dict] | None, *, secret: bool) -> dict[str, bytes]:
    if obj is None:
        return {}
    data: dict[str, bytes] = {}
    for k, v in (obj.get("data") or {}).items():
        data[k] = base64.b64decode(v) if secret else str(v).encode()
    if not secret:
        for k, v in (obj.get("binaryData") or {}).items():
            data[k] = base64.b64decode(v)
    if not items:
        return data
    out = {}
    for item in items:
        if item.get("key") in data:
            out[item.get("path") or item["key"]] = data[item["key"]]
    return out


def _source_files(ctx: VolumeContext, kind: str, src: dict, ns: str) -> dict[str, bytes]:
    if kind in ("configMap", "secret"):
        name = src.get("name") or src.get("secretName") or ""
        resource = "configmaps" if kind == "configMap" else "secrets"
        obj = ctx.lookup(resource, ns, name)
        if obj is None and kind == "configMap" and name == "kube-root-ca.crt":
            obj = {"data": {"ca.crt": ctx.ca_pem.decode()}}
        if obj is None and not src.get("optional"):
            raise ContainerConfigError(f'{kind.lower()} "{name}" not found')
        return _key_files(obj, src.get("items"), secret=kind == "secret")
    if kind == "downwardAPI":
        return {
            item["path"]: _field_value(ctx.pod, item["fieldRef"]["fieldPath"]).encode()
            for item in src.get("items") or []
            if "fieldRef" in item
        }
    if kind == "serviceAccountToken":
        return {src.get("path", "token"): ctx.token.encode()}
    return {}


def materialize_volume(ctx: VolumeContext, vol: dict, root: Path) -> Path:
    """Write one pod volume under ``root`` and return the directory to bind-mount."""
    ns = ctx.pod["metadata"].get("namespace", "default")
    target = root / vol["name"]
    if "emptyDir" in vol:
        target.mkdir(parents=True, exist_ok=True)
        os.chmod(target, 0o777)
        return target
    files: dict[str, bytes] = {}
    mode = 0o644
    if "configMap" in vol:
        files = _source_files(ctx, "configMap", vol["configMap"], ns)
        mode = vol["configMap"].get("defaultMode", mode)
    elif "secret" in vol:
        files = _source_files(ctx, "secret", vol["secret"], ns)
        mode = vol["secret"].get("defaultMode", mode)
    elif "downwardAPI" in vol:
        files = _source_files(ctx, "downwardAPI", vol["downwardAPI"], ns)
        mode = vol["downwardAPI"].get("defaultMode", mode)
    elif "projected" in vol:
        mode = vol["projected"].get("defaultMode", mode)
        for source in vol["projected"].get("sources") or []:
            for kind, src in source.items():
                files.update(_source_files(ctx, kind, src or {}, ns))
    else:
        kinds = ", ".join(k for k in vol if k != "name")
        raise PodRefused(
            "VolumeNotSupported",
            f'volume "{vol["name"]}": {kinds} volumes are not supported by the local cluster',
        )
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for rel, data in files.items():
        if rel.startswith("/") or ".." in Path(rel).parts:
            continue  # the API server validates these; never write outside the volume
        _write(target / rel, data, mode)
    return target


def mounts_for(container: dict, volume_dirs: dict[str, Path]) -> list[dict]:
    """The launcher's bind mounts for a container's volumeMounts (subPath honoured)."""
    mounts = []
    for vm in container.get("volumeMounts") or []:
        src = volume_dirs.get(vm.get("name", ""))
        if src is None:
            continue
        sub = vm.get("subPath")
        if sub:
            src = src / sub
            if not src.exists():
                src.mkdir(parents=True)
        mounts.append({"src": str(src), "dst": vm["mountPath"], "ro": bool(vm.get("readOnly"))})
    return mounts


def pod_files(pod: dict, ip: str, *, cluster_domain: str = "cluster.local") -> dict[str, str]:
    """resolv.conf, hosts and hostname of a pod (kubelet's ClusterFirst DNS policy)."""
    ns = pod["metadata"].get("namespace", "default")
    spec = pod.get("spec", {})
    hostname = spec.get("hostname") or pod["metadata"]["name"]
    search = f"{ns}.svc.{cluster_domain} svc.{cluster_domain} {cluster_domain}"
    resolv = f"search {search}\nnameserver 10.96.0.10\noptions ndots:5\n"
    fqdn = hostname
    if spec.get("subdomain"):
        fqdn = f"{hostname}.{spec['subdomain']}.{ns}.svc.{cluster_domain}"
    hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    hosts += f"{ip}\t{fqdn} {hostname}\n" if fqdn != hostname else f"{ip}\t{hostname}\n"
    return {"resolv.conf": resolv, "hosts": hosts, "hostname": hostname + "\n"}
