"""The checks behind `scripts/deploy check`, run with the tools' own Python (.stack/tools/deploy).

    deploy_check.py validate FILE...
        Validates every object of the rendered manifests against the Kubernetes OpenAPI schemas
        (kubernetes-validate's copy, offline, strict: unknown fields are errors), listing every
        error of every object; an object whose kind has no schema is an error, not a skip. A
        Secret carrying data is refused too: secrets are referenced, never committed.

    deploy_check.py dockerfile ROOT [--k8s FILE...] [--compose FILE]
        What can be known of deploy/Dockerfile without building it: the toolchain it builds with
        is the workspace's, the binaries it copies are the packages' binaries, what it copies
        and what the build reads (migrations, config, client operations, every workspace member)
        are in the build context (not excluded by .dockerignore), the final stages run as a
        numeric non-root user, the ports it exposes are those the manifests' GospeLib
        containers declare, and the compose file builds only targets that exist.

    deploy_check.py settings --gospelib BIN --router BIN --k8s NAME=FILE... --compose FILE
        Finds every container that runs a GospeLib binary (in the rendered manifests and the
        compose file), works out the GOSPELIB_* environment it would get (literal values,
        ConfigMap keys and envFrom resolved from the manifests, env files from their committed
        *.example, each value taken from a Secret replaced by a realistic dummy of its shape) and
        has the binary itself check it for that container's command line:
        `gospelib settings check --env-file F -- ARGS` or `gospelib-router --check-config ARGS`.

    deploy_check.py network --phase1 FILE --phase2 FILE
        Evaluates the rendered NetworkPolicies as Kubernetes does (a pod selected by any
        ingress policy takes only what one of them allows) against the connections each
        topology needs (the routers to the subgraphs and the registry, ai to content, every
        process and job to the stores, the stores' own peers, anyone to the public port,
        Prometheus to /metrics) and those it must refuse (anyone else to a subgraph, the
        registry or a store; one subgraph to another): every pod of the manifests is a source
        and a destination.

Exit status 1 on any problem, after reporting all of them.
"""

import argparse
import fnmatch
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import jsonschema
import referencing
import yaml
from kubernetes_validate import utils as kv

KUBERNETES_VERSION = "1.37.0"

# ------------------------------------------------------------------------------------------------
# Kubernetes schemas


def schema_dir() -> str:
    """The strict schema folder of KUBERNETES_VERSION shipped by kubernetes-validate."""
    wanted = kv.major_minor(KUBERNETES_VERSION)
    versions = [v for v in kv.all_versions() if kv.major_minor(v) == wanted]
    if not versions:
        sys.exit(f"deploy check: kubernetes-validate ships no schemas for Kubernetes {wanted}")
    return f"kubernetes-json-schema/v{versions[-1]}-local-strict"


def validator_for(obj: dict, folder: str):
    """A validator of obj's kind, or None when there is no schema for it."""
    api_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", obj["apiVersion"])
    name = f"{folder}/{obj['kind'].lower()}-{api_version}.json"
    try:
        schema = kv.schema_contents(name, KUBERNETES_VERSION)
    except FileNotFoundError:
        return None
    definitions = kv.schema_contents(f"{folder}/_definitions.json", KUBERNETES_VERSION)
    registry = referencing.Resource.from_contents(schema) @ referencing.Registry()
    registry = referencing.Resource.from_contents(definitions) @ registry
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def validate(files: list) -> int:
    folder = schema_dir()
    problems = 0
    for file in files:
        objects = [o for o in yaml.safe_load_all(Path(file).read_text()) if o]
        for obj in objects:
            what = f"{file}: {obj.get('kind', '?')}/{obj.get('metadata', {}).get('name', '?')}"
            if not isinstance(obj.get("apiVersion"), str) or not isinstance(obj.get("kind"), str):
                print(f"ERROR {what}: no apiVersion or kind")
                problems += 1
                continue
            validator = validator_for(obj, folder)
            if validator is None:
                print(f"ERROR {what}: no schema for {obj['apiVersion']} {obj['kind']} "
                      f"in Kubernetes {KUBERNETES_VERSION}")
                problems += 1
                continue
            errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
            for error in errors:
                path = ".".join(str(p) for p in error.absolute_path) or "(root)"
                print(f"ERROR {what}: {path}: {error.message}")
            problems += len(errors)
            if obj["kind"] == "Secret" and (obj.get("data") or obj.get("stringData")):
                print(f"ERROR {what}: a Secret with values is committed; reference Secrets made "
                      "outside the repository instead")
                problems += 1
        print(f"{file}: {len(objects)} objects checked against Kubernetes {KUBERNETES_VERSION}")
    return problems


# ------------------------------------------------------------------------------------------------
# The Dockerfile, statically

# What the release build reads from the context besides the workspace members' sources.
BUILD_INPUTS = ["Cargo.toml", "Cargo.lock", "migrations", "config", "client-tests/operations",
                "subgraphs/ai/prompts"]


def dockerignore_patterns(root: Path) -> list:
    path = root / ".dockerignore"
    if not path.is_file():
        return []
    return [line.strip().rstrip("/") for line in path.read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]


def ignored(relative: str, patterns: list) -> bool:
    """Whether .dockerignore keeps `relative` (or a folder above it) out of the context."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in patterns:
        if pattern.startswith("!"):
            continue
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern.lstrip("/")):
                return True
    return False


def dockerfile(args) -> int:
    root = Path(args.root)
    text = (root / "deploy" / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip().startswith("#")]
    problems = []
    stages, stage, users, exposed = [], None, {}, set()
    args_default = {}
    for line in lines:
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args_default[name.strip()] = value.strip()
        elif word == "FROM":
            match = re.search(r"\bAS\s+(\S+)", rest, re.I)
            stage = match.group(1) if match else None
            stages.append(stage)
        elif word == "USER":
            users[stage] = rest.strip()
        elif word == "EXPOSE":
            exposed.update(int(p.split("/")[0]) for p in rest.split())
        elif word in ("COPY", "ADD") and "--from=" not in rest:
            sources = [t for t in rest.split() if not t.startswith("--")][:-1]
            for source in sources:
                if not (root / source).exists():
                    problems.append(f"{word} {source}: not in the repository")
    patterns = dockerignore_patterns(root)
    for line in lines:
        word, _, rest = line.partition(" ")
        if word.upper() in ("COPY", "ADD") and "--from=" not in rest:
            for source in [t for t in rest.split() if not t.startswith("--")][:-1]:
                if source != "." and ignored(source, patterns):
                    problems.append(f"COPY {source}: excluded by .dockerignore")
    # The toolchain: the workspace's rust-version.
    workspace = tomllib.loads((root / "Cargo.toml").read_text())
    wanted = workspace["workspace"]["package"]["rust-version"]
    if args_default.get("RUST_VERSION") != wanted:
        problems.append(f"RUST_VERSION is {args_default.get('RUST_VERSION')}, the workspace "
                        f"builds with rust-version {wanted}")
    # Everything the build reads is in the context.
    for member in workspace["workspace"]["members"] + BUILD_INPUTS:
        if not (root / member).exists():
            problems.append(f"{member}: read by the build, missing from the repository")
        elif ignored(member, patterns):
            problems.append(f"{member}: read by the build, excluded by .dockerignore")
    # The binaries copied are the ones `cargo build -p gospelib -p gospelib-router` makes.
    build = next((line for line in lines if "cargo build" in line), "")
    cargo = build[build.find("cargo build"):].split("&&")[0]
    packages = re.findall(r"-p\s+(\S+)", cargo)
    bins = set()
    for member in workspace["workspace"]["members"]:
        manifest = tomllib.loads((root / member / "Cargo.toml").read_text())
        name = manifest.get("package", {}).get("name")
        if name in packages:
            declared = [b["name"] for b in manifest.get("bin", [])]
            bins.update(declared or ([name] if (root / member / "src/main.rs").exists() else []))
            bins.update(p.stem for p in (root / member / "src/bin").glob("*.rs"))
    copied = set(re.findall(r"target/release/(\S+)", build))
    for binary in sorted(copied - bins):
        problems.append(f"the build copies target/release/{binary}, which no package built "
                        f"({', '.join(packages)}) makes")
    for wanted_bin in ("gospelib", "gospelib-router"):
        if wanted_bin not in copied:
            problems.append(f"the image does not hold {wanted_bin}")
    # The final stages run as a numeric, non-root user.
    for final in ("runtime", "importer"):
        if final not in stages:
            problems.append(f"no stage named {final}")
            continue
        user = users.get(final, "")
        uid = user.split(":")[0]
        if not uid.isdigit() or uid == "0":
            problems.append(f"stage {final} runs as {user or 'root'}: give a numeric non-root USER")
    if stages and stages[-1] != "runtime":
        problems.append("the last stage (the default target) is not `runtime`")
    # The ports: what the manifests' GospeLib containers declare is exposed.
    for file in args.k8s:
        for obj in [o for o in yaml.safe_load_all(Path(file).read_text()) if o]:
            for pod in pod_specs(obj):
                for container in pod.get("containers", []):
                    if not GOSPELIB_IMAGE.search(container.get("image", "")):
                        continue
                    for port in container.get("ports", []):
                        if port["containerPort"] not in exposed:
                            problems.append(
                                f"{obj['kind']}/{obj['metadata']['name']} listens on "
                                f"{port['containerPort']}, which the image does not EXPOSE")
    if args.compose:
        services = (yaml.safe_load(Path(args.compose).read_text()) or {}).get("services", {})
        for name, service in services.items():
            build_spec = service.get("build")
            if isinstance(build_spec, dict) and build_spec.get("target") not in (None, *stages):
                problems.append(f"compose service {name} builds target "
                                f"{build_spec['target']}, which the Dockerfile lacks")
    for problem in sorted(set(problems)):
        print(f"ERROR deploy/Dockerfile: {problem}")
    print(f"deploy/Dockerfile: stages {', '.join(s or '?' for s in stages)}; "
          f"{len(set(problems))} problem(s)")
    return 1 if problems else 0


# ------------------------------------------------------------------------------------------------
# Containers and their settings

# What a Secret holds for each setting, as the check's stand-in: the shape the real one has.
SECRET_DUMMIES = {
    "GOSPELIB_PG_URL": "postgres://gospelib:c2VjcmV0LWZvci1jaGVja3M@postgres:5432/gospelib",
    "GOSPELIB_REDIS_URL": "redis://:c2VjcmV0LWZvci1jaGVja3M@redis:6379",
    "GOSPELIB_TYPESENSE_API_KEY": "3f6a1c9e0b7d4e2a8c5f1b6d9e0a7c3f",
    "GOSPELIB_INTERNAL_SECRET": "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
    # Every subgraph's key (a pod's real value holds only its own: see kustomization.yaml).
    "GOSPELIB_CALLER_KEYS": "content=a12faff5cb3b5ad1fc43e6e6a5747ff1a1d88253e602423b544899ba11a6e37a,accounts=eb0184cbddc8cb17119468914905761be80b1e9f0d1f3a53d3d2d8ad4f879bcf,billing=8c7440630871c1b676930a5f020aba8e8d7f6d6fa5331d791f33aa4907833373,study=cd05db1104e719f99965bf7e1ff03117c9b700bd82698b0b6071ec4d76e745cf,notifications=cf0b04c506a17b8ea85c2534429a5a2e181e3db893e4b3a551b7204b7f1512ee,ai=f4a483c7c21960356d697ca81801d6e1de5a3ce9b0a66e27efbce2c7f26a86b1",
    # During a rotation only (deploy/PHASE3.md): the keys of the previous secret.
    "GOSPELIB_CALLER_KEYS_PREVIOUS": "content=efbf0f93d9bfec940eaa537e48f11174677145a0b24a7b97aa8205600de3afc8,accounts=f3615b41f5700d1379ee5b61b3ce42cd1cdd9bce6e14957631539c239f0cc5be,billing=9183a160bdb869d8037b9eea2bd05c76dfd2eb2aefd4b08664bbae7064133245,study=d881629f37b5015bee1537ac13e8360ea3694a05040040347312c4c970c4d153,notifications=b9a1fb1071ccfc40f954f2e9f068c0c90c02efa12aee78027e14e216837a577a,ai=3f8eca7d394e4ca4b36a75645b091df0f36f01dd5b2ccdc9ebae01820655419f",
    "GOSPELIB_CLERK_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "GOSPELIB_STRIPE_WEBHOOK_SECRET": "whsec_c2lnbmluZy1zZWNyZXQtZm9yLWNoZWNrcw",
    "GOSPELIB_STRIPE_API_KEY": "sk_live_51Hc0ExampleOnlyNotARealKey000000000000000000",
    "GOSPELIB_ANTHROPIC_API_KEY": "sk-ant-api03-ExampleOnlyNotARealKey0000000000",
    "GOSPELIB_OPENAI_API_KEY": "sk-proj-ExampleOnlyNotARealKey0000000000",
    "GOSPELIB_RESEND_API_KEY": "re_ExampleOnly_NotARealKey000000",
}

GOSPELIB_IMAGE = re.compile(r"(^|/)gospelib(-importer)?(:|@|$)")


class Container:
    """A container that runs a GospeLib binary: where it is, what it runs, what it gets."""

    def __init__(self, label: str, binary: str, args: list):
        self.label = label
        self.binary = binary
        self.args = args
        self.env = {}
        self.problems = []

    def set(self, name: str, value: str):
        if name in self.env:
            self.problems.append(f"{name} is given twice")
        self.env[name] = value


def pod_specs(obj: dict):
    """The pod spec of a workload, if it is one."""
    spec = obj.get("spec", {})
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield spec.get("template", {}).get("spec", {})
    elif obj["kind"] == "CronJob":
        yield spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})
    elif obj["kind"] == "Pod":
        yield spec


def binary_and_args(command, args):
    """The GospeLib binary a container runs and its arguments (the image's entrypoint is
    `gospelib`)."""
    command = list(command or [])
    args = list(args or [])
    if not command:
        return "gospelib", args
    name = os.path.basename(command[0])
    return name, command[1:] + args


EXPANSION = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def k8s_containers(phase: str, file: str) -> list:
    objects = [o for o in yaml.safe_load_all(Path(file).read_text()) if o]
    config_maps = {o["metadata"]["name"]: o.get("data", {}) or {}
                   for o in objects if o.get("kind") == "ConfigMap"}
    found = []
    for obj in objects:
        for pod in pod_specs(obj):
            for container in pod.get("initContainers", []) + pod.get("containers", []):
                if not GOSPELIB_IMAGE.search(container.get("image", "")):
                    continue
                binary, args = binary_and_args(container.get("command"), container.get("args"))
                label = (f"k8s {phase} {obj['kind']}/{obj['metadata']['name']} "
                         f"container {container['name']}")
                c = Container(label, binary, args)
                plain = {}
                for source in container.get("envFrom", []):
                    prefix = source.get("prefix", "")
                    if "configMapRef" in source:
                        name = source["configMapRef"]["name"]
                        if name not in config_maps:
                            c.problems.append(f"envFrom names ConfigMap {name}, which is not "
                                              "in the manifests")
                            continue
                        for key, value in config_maps[name].items():
                            c.set(prefix + key, str(value))
                            plain[prefix + key] = str(value)
                    elif "secretRef" in source:
                        c.problems.append(
                            f"envFrom secretRef {source['secretRef'].get('name')} hides which "
                            "settings the container gets: name each with env[].valueFrom."
                            "secretKeyRef")
                for entry in container.get("env", []):
                    name = entry["name"]
                    if "value" in entry:
                        value = EXPANSION.sub(lambda m: plain.get(m.group(1), m.group(0)),
                                              str(entry["value"]))
                    elif "secretKeyRef" in entry.get("valueFrom", {}):
                        if not name.startswith("GOSPELIB_"):
                            continue
                        if name not in SECRET_DUMMIES:
                            c.problems.append(
                                f"{name} comes from a Secret, and the check has no stand-in "
                                "value of its shape: add one to SECRET_DUMMIES in "
                                "deploy/tools/deploy_check.py")
                            continue
                        value = SECRET_DUMMIES[name]
                    elif "configMapKeyRef" in entry.get("valueFrom", {}):
                        ref = entry["valueFrom"]["configMapKeyRef"]
                        data = config_maps.get(ref["name"])
                        if data is None or ref["key"] not in data:
                            if not ref.get("optional"):
                                c.problems.append(f"{name}: ConfigMap {ref['name']} has no key "
                                                  f"{ref['key']} in the manifests")
                            continue
                        value = str(data[ref["key"]])
                    else:
                        # fieldRef / resourceFieldRef: known only at run time.
                        if name.startswith("GOSPELIB_"):
                            c.problems.append(f"{name} is set from {list(entry['valueFrom'])}, "
                                              "which the check cannot stand in for")
                        continue
                    c.set(name, value)
                    plain[name] = value
                found.append(c)
    return found


def read_env_file(path: Path) -> dict:
    """A compose env file, as compose reads it: NAME=value lines, # comments."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition("=")
        values[name.strip()] = value.strip()
    return values


def compose_containers(file: str) -> list:
    compose_dir = Path(file).parent
    document = yaml.safe_load(Path(file).read_text())
    found = []
    for name, service in (document.get("services") or {}).items():
        image = service.get("image", "")
        target = (service.get("build") or {}).get("target", "") if isinstance(
            service.get("build"), dict) else ""
        if not GOSPELIB_IMAGE.search(image) and target not in ("runtime", "importer"):
            continue
        entrypoint = service.get("entrypoint")
        if isinstance(entrypoint, str):
            entrypoint = entrypoint.split()
        command = service.get("command") or []
        if isinstance(command, str):
            command = command.split()
        binary, args = binary_and_args(entrypoint, command)
        c = Container(f"compose service {name}", binary, args)
        env_files = service.get("env_file") or []
        if isinstance(env_files, (str, dict)):
            env_files = [env_files]
        for entry in env_files:
            path = entry["path"] if isinstance(entry, dict) else entry
            # The real file holds secrets and is not committed; its example has their shapes.
            example = compose_dir / f"{path}.example"
            if not example.is_file():
                c.problems.append(f"env_file {path} has no committed {path}.example to check")
                continue
            for key, value in read_env_file(example).items():
                if key.startswith("GOSPELIB_"):
                    c.set(key, value)
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.partition("=")[::2] for item in environment)
        for key, value in environment.items():
            value = "" if value is None else str(value)
            if "${" in value or re.search(r"\$[A-Za-z_]", value):
                c.problems.append(f"{key} is interpolated from the shell ({value}): give the "
                                  "value, or an env_file")
                continue
            # environment wins over env_file, as in compose.
            c.env.pop(key, None)
            c.set(key, value)
        found.append(c)
    return found


def run_check(container: Container, gospelib: str, router: str) -> tuple:
    """The binary's own verdict on the container's settings: (passed, its report)."""
    env = {k: v for k, v in container.env.items() if k.startswith("GOSPELIB_")}
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    if container.binary == "gospelib":
        # Named after the container, since the report names the file.
        with tempfile.TemporaryDirectory() as folder:
            env_file = Path(folder) / (re.sub(r"[^A-Za-z0-9.-]+", "-", container.label) + ".env")
            env_file.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
            args = container.args or ["serve"]
            result = subprocess.run(
                [gospelib, "settings", "check", "--env-file", str(env_file), "--", *args],
                env=clean, capture_output=True, text=True)
    elif container.binary == "gospelib-router":
        # The router takes its supergraph URLs from the process environment, so the settings
        # go there, as in the pod.
        result = subprocess.run([router, "--check-config", *container.args],
                                env={**clean, **env}, capture_output=True, text=True)
    else:
        return False, f"runs {container.binary}, which is not a GospeLib binary"
    report = (result.stdout + result.stderr).strip()
    return result.returncode == 0, report


def settings(args) -> int:
    containers = []
    for item in args.k8s:
        phase, _, file = item.partition("=")
        containers += k8s_containers(phase, file)
    if args.compose:
        containers += compose_containers(args.compose)
    if not containers:
        print("ERROR no container runs a GospeLib binary: is the image name still gospelib/…?")
        return 1
    failed = 0
    for container in containers:
        command = " ".join([container.binary, *container.args])
        if container.problems:
            failed += 1
            print(f"FAIL {container.label}: {command}")
            for problem in container.problems:
                print(f"       - {problem}")
            continue
        passed, report = run_check(container, args.gospelib, args.router)
        if passed:
            print(f"ok   {container.label}: {command} ({len(container.env)} settings)")
        else:
            failed += 1
            print(f"FAIL {container.label}: {command}")
            for line in report.splitlines():
                print(f"       {line}")
    print(f"{len(containers)} containers checked, {failed} with problems")
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------------
# NetworkPolicies, evaluated

NAMESPACE = "gospelib"
# Sources outside the namespace: an ingress controller's pod, and Prometheus.
OUTSIDE = {"ingress-nginx": {}, "monitoring": {"app.kubernetes.io/name": "prometheus"}}
PROCESSES = ["content", "accounts", "billing", "study", "notifications", "ai"]
JOBS = ["migrate", "ingest", "reminders"]


def selects(selector, labels: dict) -> bool:
    """Whether a label selector (matchLabels, matchExpressions) selects `labels`."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def peer_matches(peer: dict, namespace: str, labels: dict) -> bool:
    if "ipBlock" in peer:
        return False
    namespace_labels = {"kubernetes.io/metadata.name": namespace}
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], namespace_labels):
            return False
    elif namespace != NAMESPACE:
        return False
    return "podSelector" not in peer or selects(peer["podSelector"], labels)


def port_matches(rule_ports, port: int, named: dict) -> bool:
    if not rule_ports:
        return True
    for entry in rule_ports:
        wanted = entry.get("port")
        if wanted is None or wanted == port or named.get(wanted) == port:
            return True
    return False


def allowed(policies: list, source: tuple, destination: dict, port: int) -> bool:
    """Whether `source` (namespace, labels) may connect to `destination`'s pod on `port`."""
    selecting = [p for p in policies if "Ingress" in (p["spec"].get("policyTypes") or ["Ingress"])
                 and selects(p["spec"].get("podSelector"), destination["labels"])]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from")
            if peers and not any(peer_matches(peer, *source) for peer in peers):
                continue
            if port_matches(rule.get("ports"), port, destination["ports"]):
                return True
    return False


def pods(objects: list) -> dict:
    """Component → its pod template's labels and named container ports."""
    found = {}
    for obj in objects:
        for spec in pod_specs(obj):
            template = obj["spec"]
            if obj["kind"] == "CronJob":
                template = template["jobTemplate"]["spec"]
            labels = template["template"]["metadata"].get("labels", {})
            ports = {p["name"]: p["containerPort"] for c in spec.get("containers", [])
                     for p in c.get("ports", []) if "name" in p}
            found[labels.get("app.kubernetes.io/component", obj["metadata"]["name"])] = {
                "labels": labels, "ports": ports}
    return found


def expected_flows(phase: str, components: list) -> list:
    """(source, destination, port, must be allowed) for one topology."""
    stores = [("postgres", 5432), ("redis", 6379), ("falkordb", 6379), ("typesense", 8108)]
    ours = [c for c in components if c in PROCESSES + JOBS + ["router", "registry", "gospelib",
                                                                "schema-publish"]]
    flows = []
    for who in ours:
        flows += [(who, store, port, True) for store, port in stores]
    flows += [("falkordb", "falkordb", 6379, True), ("typesense", "typesense", 8107, True),
              ("typesense", "typesense", 8108, True)]
    for outside in OUTSIDE:
        flows += [(outside, store, port, False) for store, port in stores]
        flows.append((outside, "typesense", 8107, False))
    flows += [(store, other, port, False) for store, _ in stores for other, port in stores
              if store != other]
    if phase == "phase1":
        flows += [("ingress-nginx", "gospelib", 4000, True), ("monitoring", "gospelib", 4001, True),
                  ("ingress-nginx", "gospelib", 4001, False)]
        return flows
    flows += [("ingress-nginx", public, 4000, True) for public in ["router", "accounts", "billing"]]
    for internal in PROCESSES + ["registry"]:
        flows += [("router", internal, 4001, True), ("monitoring", internal, 4001, True),
                  ("ingress-nginx", internal, 4001, False)]
        flows += [(other, internal, 4001, other == "ai" and internal == "content")
                  for other in PROCESSES + JOBS + ["registry", "schema-publish"] if other != internal]
    return flows


def network(args) -> int:
    problems = 0
    for phase, file in [("phase1", args.phase1), ("phase2", args.phase2)]:
        objects = [o for o in yaml.safe_load_all(Path(file).read_text()) if o]
        policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
        found = pods(objects)
        flows = expected_flows(phase, list(found))
        for source, destination, port, wanted in flows:
            if destination not in found:
                print(f"ERROR {phase}: no pod of component {destination}")
                problems += 1
                continue
            if source in OUTSIDE:
                origin = (source, OUTSIDE[source])
            elif source in found:
                origin = (NAMESPACE, found[source]["labels"])
            else:
                print(f"ERROR {phase}: no pod of component {source}")
                problems += 1
                continue
            if allowed(policies, origin, found[destination], port) != wanted:
                verdict = "refused" if wanted else "allowed"
                print(f"ERROR {phase}: {source} -> {destination}:{port} is {verdict}")
                problems += 1
        print(f"{phase}: {len(flows)} connections checked against {len(policies)} NetworkPolicies")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    v = commands.add_parser("validate")
    v.add_argument("files", nargs="+")
    d = commands.add_parser("dockerfile")
    d.add_argument("root")
    d.add_argument("--k8s", action="append", default=[])
    d.add_argument("--compose")
    s = commands.add_parser("settings")
    s.add_argument("--gospelib", required=True)
    s.add_argument("--router", required=True)
    s.add_argument("--k8s", action="append", default=[], metavar="NAME=FILE")
    s.add_argument("--compose")
    n = commands.add_parser("network")
    n.add_argument("--phase1", required=True)
    n.add_argument("--phase2", required=True)
    args = parser.parse_args()
    if args.command == "network":
        return network(args)
    if args.command == "validate":
        problems = validate(args.files)
        if problems:
            print(f"{problems} schema problem(s)")
        return 1 if problems else 0
    if args.command == "dockerfile":
        return dockerfile(args)
    return settings(args)


if __name__ == "__main__":
    sys.exit(main())
