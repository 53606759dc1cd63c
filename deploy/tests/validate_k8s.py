"""Validates rendered Kubernetes manifests (kustomize output or plain files).

Used by scripts/check-deploy; runs inside the virtualenv it installs (kubernetes-validate, PyYAML).

For every object:
  * built-in kinds are validated against the Kubernetes OpenAPI schemas that kubernetes-validate
    bundles, in strict mode (unknown fields are errors), for every --kubernetes-version given;
  * custom resources (no built-in schema) are written to --custom-resources-out as JSON, for
    deploy/tests/validate-custom-resources.mjs to check against their CRD schemas;
  * with --namespace, every namespaced object must carry that namespace;
  * pods and pod templates in a namespace that enforces Pod Security "restricted" must satisfy it
    (the API server would refuse them otherwise), and every pod that reads BONKER_* variables must
    set enableServiceLinks: false, because Kubernetes' service variables (BONKER_BROKER_PORT=…)
    would otherwise reach bonker's settings and stop it at start.

Prints one line per problem and exits 1 when there is any.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Iterator

import kubernetes_validate
import yaml

CLUSTER_SCOPED_KINDS = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
    "StorageClass",
    "PersistentVolume",
    "IngressClass",
    "RuntimeClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ClusterIssuer",
}

POD_TEMPLATE_KINDS = {"Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job"}

RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def object_name(obj: dict[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    return f"{obj.get('kind', '?')}/{metadata.get('name', '?')}"


class StrictLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate keys, which PyYAML would silently resolve to the last
    value (and which kubectl rejects)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_objects(paths: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path in paths:
        with open(path, encoding="utf-8") as stream:
            for document in yaml.load_all(stream, Loader=StrictLoader):
                if document is None:
                    continue
                if not isinstance(document, dict):
                    raise SystemExit(f"{path}: a YAML document is not a mapping")
                if document.get("kind", "").endswith("List") and "items" in document:
                    for item in document["items"]:
                        yield path, item
                else:
                    yield path, document


def pod_spec_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind in POD_TEMPLATE_KINDS:
        return (spec.get("template") or {}).get("spec")
    if kind == "CronJob":
        job_template = spec.get("jobTemplate") or {}
        return ((job_template.get("spec") or {}).get("template") or {}).get("spec")
    return None


def restricted_problems(pod: dict[str, Any]) -> list[str]:
    """The checks of the Pod Security Standards' restricted profile (baseline included) that
    manifests can get wrong."""
    problems: list[str] = []
    pod_context = pod.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problems.append(f"{flag} is not allowed")
    for volume in pod.get("volumes") or []:
        kinds = [key for key in volume if key != "name"]
        for kind in kinds:
            if kind not in RESTRICTED_VOLUME_TYPES:
                problems.append(f"volume {volume.get('name')!r} of type {kind} is not allowed")
    pod_seccomp = (pod_context.get("seccompProfile") or {}).get("type")
    containers = [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]
    for container in containers:
        name = container.get("name", "?")
        context = container.get("securityContext") or {}
        if context.get("privileged"):
            problems.append(f"container {name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"container {name}: allowPrivilegeEscalation must be false")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"container {name}: capabilities must drop ALL")
        added = set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}
        if added:
            problems.append(f"container {name}: capabilities may add only NET_BIND_SERVICE, not {sorted(added)}")
        run_as_non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
        if run_as_non_root is not True:
            problems.append(f"container {name}: runAsNonRoot must be true")
        if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
            problems.append(f"container {name}: runAsUser must not be 0")
        seccomp = (context.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"container {name}: seccompProfile must be RuntimeDefault or Localhost")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"container {name}: hostPort is not allowed")
    return problems


def reads_bonker_settings(pod: dict[str, Any]) -> bool:
    containers = [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]
    return any(
        str(variable.get("name", "")).startswith("BONKER_")
        for container in containers
        for variable in container.get("env") or []
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="YAML files (multi-document) to check")
    parser.add_argument("--kubernetes-version", action="append", required=True, help="e.g. 1.29.0; repeatable")
    parser.add_argument("--namespace", help="every namespaced object must be in this namespace")
    parser.add_argument("--custom-resources-out", help="write objects of custom kinds here (JSON list)")
    parser.add_argument(
        "--restricted-everywhere",
        action="store_true",
        help="hold every pod to Pod Security restricted, whatever its namespace",
    )
    args = parser.parse_args()

    problems: list[str] = []
    custom_resources: list[dict[str, Any]] = []
    objects = list(load_objects(args.files))
    if not objects:
        problems.append("no objects found")

    restricted_namespaces = {
        obj["metadata"]["name"]
        for _, obj in objects
        if obj.get("kind") == "Namespace"
        and ((obj.get("metadata") or {}).get("labels") or {}).get("pod-security.kubernetes.io/enforce") == "restricted"
    }

    builtin_count = 0
    for path, obj in objects:
        name = object_name(obj)
        is_custom = False
        for version in args.kubernetes_version:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                is_custom = True
                break
            except kubernetes_validate.ValidationError as error:
                location = ".".join(str(part) for part in error.path) or "(top level)"
                problems.append(f"{path}: {name}: Kubernetes {version}: {location}: {error.message}")
        if is_custom:
            custom_resources.append({"source": path, "object": obj})
        else:
            builtin_count += 1

        metadata = obj.get("metadata") or {}
        if args.namespace and obj.get("kind") not in CLUSTER_SCOPED_KINDS:
            if metadata.get("namespace") != args.namespace:
                problems.append(
                    f"{path}: {name}: namespace is {metadata.get('namespace')!r}, expected {args.namespace!r}"
                )

        pod = pod_spec_of(obj)
        if pod is not None:
            namespace = metadata.get("namespace")
            if args.restricted_everywhere or namespace in restricted_namespaces:
                problems.extend(
                    f"{path}: {name}: Pod Security restricted: {problem}"
                    for problem in restricted_problems(pod)
                )
            if reads_bonker_settings(pod) and pod.get("enableServiceLinks") is not False:
                problems.append(
                    f"{path}: {name}: reads BONKER_* settings, so it must set enableServiceLinks: false"
                )

    if args.custom_resources_out:
        with open(args.custom_resources_out, "w", encoding="utf-8") as stream:
            json.dump(custom_resources, stream)

    for problem in problems:
        print(problem)
    versions = ", ".join(args.kubernetes_version)
    print(
        f"{builtin_count} built-in objects valid against Kubernetes {versions} (strict)"
        if not problems
        else f"{len(problems)} problems",
        file=sys.stderr,
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
