#!/usr/bin/env python3
"""Checks of deploy/ and the Dockerfile that a schema cannot make; scripts/check-deploy.sh
runs them. Each subcommand prints what it checked and exits 1 naming every violation.

  rendering NAME FILE... --toml-dir DIR   a set of manifests (plain or rendered chart):
                                          the DaemonSet's privileges, probes, admin address,
                                          scrape annotations and memory budget against its
                                          ConfigMap's TOML; writes the TOML to DIR/NAME.toml
  caps FILE...                            the added capabilities, as setpriv wants them
  crd FILE...                             documents of CRD kinds: the fields they need
  toml-keys HELP TOML...                  every key of the TOML files is a long flag in HELP
                                          (the text of `shadowtap run --help`)
  image                                   Dockerfile vs README vs .ci/setup
  readme-helm                             prints the README's `helm install` command
  runtime-libs BINARY                     the binary's shared libraries vs the runtime stage
"""

import os
import re
import subprocess
import sys
import tomllib

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1 << 20

# Defaults of `shadowtap run` (agent/src/config.rs) for caps a TOML may leave out.
DEFAULTS = {
    "ring-bytes": 8 << 20,
    "pcap-buffer": 32 << 20,
    "max-buffer": 16 << 20,
    "max-flows": 50_000,
    "max-head": 64 << 10,
    "max-body": 8 << 20,
    "queue-len": 10_000,
    "max-in-flight": 64,
    "engine": "auto",
}
# Per `max-flows`: a connection holding a few bytes of a request head (its slot, the
# delivering direction's state, its framer) measured 787 bytes (stress_memory
# `flows_holding_a_few_bytes_each_cost_what_is_stated`, stated 1 KiB), plus the entry a
# closed connection leaves (up to `max-flows` of them, ~110 bytes): 1,152 bytes. An
# idle `run` with the eBPF engine peaks at 25 MiB.
FLOW_BYTES = 1152
PROCESS_BYTES = 30 * MIB
# `max-buffer` caps the out-of-order bytes and, again, the bytes framers hold; buffers
# grow by doubling, so each may take twice its bytes in memory.
BUFFER_FACTOR = 4

ENGINE_CAPS = {
    "ebpf": {"BPF", "NET_ADMIN", "PERFMON"},
    "pcap": {"NET_ADMIN", "NET_RAW"},
    "auto": {"BPF", "NET_ADMIN", "PERFMON", "NET_RAW"},
}

errors = []


def fail(msg):
    errors.append(msg)


def finish(what):
    if errors:
        for e in errors:
            print(f"check-deploy: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"check-deploy: {what}: ok")


def load_docs(paths):
    docs = []
    for p in paths:
        with open(p) as f:
            docs.extend((p, d) for d in yaml.safe_load_all(f) if d)
    return docs


def quantity_bytes(q):
    m = re.fullmatch(r"([0-9]+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(q))
    if not m:
        raise ValueError(f"memory quantity {q!r} not understood")
    mult = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
            "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}[m.group(2)]
    return int(m.group(1)) * mult


def as_list(v):
    return v if isinstance(v, list) else [v]


def memory_budget(toml):
    """Upper bound of what the caps let the agent hold, in bytes, and its parts."""
    c = {**DEFAULTS, **toml}
    engine = c["engine"]
    engine_bytes = {"ebpf": c["ring-bytes"], "pcap": c["pcap-buffer"]}.get(
        engine, max(c["ring-bytes"], c["pcap-buffer"]))
    targets = len(as_list(toml.get("target", [])))
    copies = targets * (c["queue-len"] + c["max-in-flight"]) * (c["max-head"] + c["max-body"])
    parts = {
        f"capture ring ({engine})": engine_bytes,
        "out-of-order bytes and framers": BUFFER_FACTOR * c["max-buffer"],
        f"copies queued and in flight ({targets} targets)": copies,
        "flow table": c["max-flows"] * FLOW_BYTES,
        "process": PROCESS_BYTES,
    }
    return sum(parts.values()), parts


def check_rendering(name, paths, toml_dir):
    docs = load_docs(paths)
    kinds = {}
    for _, d in docs:
        kinds.setdefault(d.get("kind"), []).append(d)
    if len(kinds.get("DaemonSet", [])) != 1 or len(kinds.get("ConfigMap", [])) != 1:
        fail(f"{name}: wants exactly one DaemonSet and one ConfigMap")
        return
    ds, cm = kinds["DaemonSet"][0], kinds["ConfigMap"][0]
    text = (cm.get("data") or {}).get("shadowtap.toml")
    if text is None:
        fail(f"{name}: ConfigMap has no shadowtap.toml")
        return
    try:
        toml = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        fail(f"{name}: ConfigMap's shadowtap.toml: {e}")
        return
    os.makedirs(toml_dir, exist_ok=True)
    with open(os.path.join(toml_dir, f"{name}.toml"), "w") as f:
        f.write(text)
    for key in ("port", "target"):
        if key not in toml:
            fail(f"{name}: shadowtap.toml has no {key}")

    pod = ds["spec"]["template"]
    spec = pod["spec"]
    if spec.get("hostNetwork") is not True:
        fail(f"{name}: DaemonSet needs hostNetwork: true")
    if spec.get("dnsPolicy") != "ClusterFirstWithHostNet":
        fail(f"{name}: dnsPolicy must be ClusterFirstWithHostNet under hostNetwork")
    for v in spec.get("volumes", []):
        if "hostPath" in v:
            fail(f"{name}: hostPath volume {v['name']}: nothing of the host is mounted "
                 "(TCX links need no /sys/fs/bpf)")
    if len(spec["containers"]) != 1:
        fail(f"{name}: one container expected")
        return
    ctr = spec["containers"][0]

    sc = ctr.get("securityContext", {})
    if sc.get("privileged") is not False:
        fail(f"{name}: privileged must be false, explicitly")
    if sc.get("allowPrivilegeEscalation") is not False:
        fail(f"{name}: allowPrivilegeEscalation must be false")
    caps = sc.get("capabilities", {})
    if caps.get("drop") != ["ALL"]:
        fail(f"{name}: capabilities.drop must be [ALL]")
    engine = toml.get("engine", DEFAULTS["engine"])
    want = ENGINE_CAPS.get(engine)
    got = set(caps.get("add", []))
    if want is None:
        fail(f"{name}: engine {engine!r} unknown")
    elif got != want:
        fail(f"{name}: engine {engine} needs capabilities {sorted(want)}, DaemonSet adds {sorted(got)}")

    env = {e["name"]: e for e in ctr.get("env", [])}
    field = lambda n: env.get(n, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
    # Every variable is one the agent reads, or one another variable's value refers to
    # as $(NAME): nothing passed to the pod that nothing reads.
    values = " ".join(str(e.get("value", "")) for e in env.values())
    for n in env:
        if not (n.startswith("SHADOWTAP_") or n == "RUST_LOG" or f"$({n})" in values):
            fail(f"{name}: env {n} is read by nothing (the agent reads SHADOWTAP_* and RUST_LOG)")
    ports = {p.get("name"): p["containerPort"] for p in ctr.get("ports", [])}
    admin_port = ports.get("admin")
    if admin_port is None:
        fail(f"{name}: container needs a port named admin")
    addr = env.get("SHADOWTAP_ADMIN_ADDR", {}).get("value") or toml.get("admin-addr", "")
    if "$(HOST_IP)" in addr and field("HOST_IP") != "status.hostIP":
        fail(f"{name}: HOST_IP must come from status.hostIP")
    if not addr or re.match(r"^(0\.0\.0\.0|\[::\]):", addr):
        fail(f"{name}: admin address {addr!r}: must be set and not every address")
    elif admin_port is not None and not addr.endswith(f":{admin_port}"):
        fail(f"{name}: admin address {addr!r} is not on the admin port {admin_port}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = ctr.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") not in ("admin", admin_port):
            fail(f"{name}: {probe} must GET {path} on the admin port")

    args = ctr.get("args", [])
    mounts = {m["name"]: m["mountPath"] for m in ctr.get("volumeMounts", [])}
    cm_vols = [v["name"] for v in spec.get("volumes", [])
               if v.get("configMap", {}).get("name") == cm["metadata"]["name"]]
    want_path = [f"{mounts[v]}/shadowtap.toml" for v in cm_vols if v in mounts]
    if args[:1] != ["run"] or "--config" not in args or \
            args[args.index("--config") + 1] not in want_path:
        fail(f"{name}: args {args} must be `run --config` the mounted ConfigMap ({want_path})")

    annotated = [("pod template", pod["metadata"].get("annotations", {}))]
    annotated += [("Service", s["metadata"].get("annotations", {})) for s in kinds.get("Service", [])]
    for what, ann in annotated:
        if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/path") != "/metrics" \
                or ann.get("prometheus.io/port") != str(admin_port):
            fail(f"{name}: {what} needs prometheus.io scrape/port {admin_port}/path /metrics annotations")

    res = ctr.get("resources", {})
    try:
        limit = quantity_bytes(res["limits"]["memory"])
        quantity_bytes(res["requests"]["memory"])
    except (KeyError, ValueError) as e:
        fail(f"{name}: memory request and limit needed ({e})")
        return
    total, parts = memory_budget(toml)
    detail = " + ".join(f"{k} {v / MIB:.0f}" for k, v in parts.items())
    print(f"check-deploy: {name}: memory {detail} = {total / MIB:.0f} MiB "
          f"<= limit {limit / MIB:.0f} MiB?")
    if total > limit:
        fail(f"{name}: the caps allow {total / MIB:.0f} MiB, over the {limit / MIB:.0f} MiB limit")
    finish(f"{name} ({len(docs)} documents)")


def print_caps(paths):
    for _, d in load_docs(paths):
        if d.get("kind") == "DaemonSet":
            add = d["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"]
            print(",".join(f"+{c.lower()}" for c in add))
            return
    sys.exit("check-deploy: no DaemonSet")


# Fields each custom kind used in deploy/ needs; kubernetes-validate has no schema for them.
CRD_FIELDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ["spec.selector", "spec.endpoints"],
    ("networking.istio.io/v1", "Gateway"): ["spec.selector", "spec.servers"],
    ("networking.istio.io/v1", "VirtualService"): ["spec.hosts", "spec.http"],
}


def check_crds(paths):
    n = 0
    for path, d in load_docs(paths):
        key = (d.get("apiVersion"), d.get("kind"))
        if key not in CRD_FIELDS:
            continue
        n += 1
        if not d.get("metadata", {}).get("name"):
            fail(f"{path}: {key[1]} without metadata.name")
        for dotted in CRD_FIELDS[key]:
            node = d
            for part in dotted.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if not node:
                fail(f"{path}: {key[1]} needs {dotted}")
        if key[1] == "VirtualService":
            for route in d["spec"].get("http", []):
                for m in route.get("match", []):
                    rx = m.get("authority", {}).get("regex")
                    if rx is not None:
                        try:
                            re.compile(rx)
                        except re.error as e:
                            fail(f"{path}: route {route.get('name')}: regex {rx!r}: {e}")
                if not (route.get("route") or route.get("directResponse") or route.get("redirect")):
                    fail(f"{path}: route {route.get('name')} goes nowhere")
    finish(f"{n} custom-kind documents")


def check_toml_keys(help_file, paths):
    flags = set(re.findall(r"--([a-z][a-z0-9-]+)", open(help_file).read()))
    for p in paths:
        with open(p, "rb") as f:
            for key in tomllib.load(f):
                if key not in flags:
                    fail(f"{p}: key {key!r} is no long flag of `shadowtap run`")
    finish(f"keys of {len(paths)} TOML files are flags of `shadowtap run`")


def readme_helm():
    readme = open(os.path.join(ROOT, "README.md")).read()
    m = re.search(r"^helm install (?:[^\n]*\\\n)*[^\n]*$", readme, re.M)
    if not m:
        sys.exit("check-deploy: README.md has no `helm install` command")
    print(m.group(0).replace("\\\n", " "))


def stages(dockerfile):
    """Dockerfile instructions per stage, continuation lines joined."""
    out, cur, buf = [], None, ""
    for line in dockerfile.splitlines():
        if line.lstrip().startswith("#") and not buf:
            continue
        buf += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if line.endswith("\\"):
            continue
        if buf.upper().startswith("FROM "):
            cur = []
            out.append(cur)
        if cur is not None and buf:
            cur.append(buf)
        buf = ""
    return out


def apt_packages(text):
    pkgs = set()
    for m in re.finditer(r"apt-get install\s+([^&;|\n]*)", text):
        pkgs.update(w for w in m.group(1).split() if not w.startswith("-"))
    return pkgs


def check_image():
    read = lambda p: open(os.path.join(ROOT, p)).read()
    dockerfile, setup, readme = read("Dockerfile"), read(".ci/setup"), read("README.md")
    st = stages(dockerfile)
    if len(st) != 2:
        fail(f"Dockerfile: a builder and a runtime stage expected, found {len(st)}")
        finish("image")
    builder, runtime = "\n".join(st[0]), "\n".join(st[1])
    runs = [i for i in st[0] if i.upper().startswith("RUN ")]
    if sum("scripts/build-release.sh" in r for r in runs) != 1:
        fail("Dockerfile: the builder must run scripts/build-release.sh exactly once")
    if re.search(r"cargo\s+(\+\S+\s+)?build", dockerfile):
        fail("Dockerfile: builds with cargo directly; scripts/build-release.sh is the build")
    if "scripts/build-release.sh" not in readme:
        fail("README.md: the build step scripts/build-release.sh is not in it")
    if re.search(r"^COPY\b(?!.*--from)", runtime, re.M):
        fail("Dockerfile: the runtime stage copies from the context, not from the builder")
    setup_pkgs = apt_packages(re.sub(r"for pkg in ([^;]*);", r"apt-get install \1", setup))
    build_pkgs = apt_packages(builder)
    for p in sorted(build_pkgs - setup_pkgs):
        fail(f"Dockerfile builder installs {p}, which .ci/setup does not")
    for p in ("llvm-22-dev", "libpolly-22-dev", "libpcap-dev"):
        if p not in build_pkgs:
            fail(f"Dockerfile builder lacks {p}, which the build needs (.ci/setup installs it)")
    linker = "LLVM_PREFIX=/usr/lib/llvm-22 cargo install --locked bpf-linker"
    for what, text in (("Dockerfile", builder), (".ci/setup", setup)):
        if linker not in text:
            fail(f"{what}: bpf-linker is not installed as `{linker}`")
        if not re.search(r"toolchain install nightly", text) or "rust-src" not in text:
            fail(f"{what}: no nightly with rust-src")
    if re.search(r"^USER\s+(0|root)\b", runtime, re.M) or not re.search(r"^USER\s+\d+", runtime, re.M):
        fail("Dockerfile: the runtime stage must end as a numeric non-root USER")
    finish("Dockerfile builds as the README says, with .ci/setup's build packages")


def check_runtime_libs(binary):
    """Every shared library the binary needs comes from a package the runtime stage installs
    or that debian-slim has (libc6, libgcc-s1)."""
    dockerfile = open(os.path.join(ROOT, "Dockerfile")).read()
    runtime_pkgs = apt_packages("\n".join(stages(dockerfile)[-1])) | {"libc6", "libgcc-s1"}
    # Direct needs only: apt brings the packages' own dependencies.
    dyn = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True, check=True).stdout
    needed = set(re.findall(r"\(NEEDED\).*\[(.+)\]", dyn))
    ldd = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    for line in ldd.splitlines():
        m = re.match(r"\s*(\S+) => (/\S+)", line)
        if not m or m.group(1) not in needed:
            continue
        real = os.path.realpath(m.group(2))
        owner = None
        for candidate in (m.group(2), real):
            r = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
            if r.returncode == 0:
                owner = r.stdout.split(":")[0]
                break
        if owner is None:
            fail(f"{binary}: {m.group(1)} ({real}) belongs to no package")
        elif owner not in runtime_pkgs:
            fail(f"{binary}: {m.group(1)} is in package {owner}, which the runtime stage lacks")
        else:
            print(f"check-deploy: {m.group(1)} <- {owner}")
    finish("runtime stage has every shared library of the binary")


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    cmd, rest = args[0], args[1:]
    if cmd == "rendering":
        i = rest.index("--toml-dir")
        toml_dir = rest[i + 1]
        files = rest[1:i] + rest[i + 2:]
        check_rendering(rest[0], files, toml_dir)
    elif cmd == "caps":
        print_caps(rest)
    elif cmd == "crd":
        check_crds(rest)
    elif cmd == "toml-keys":
        check_toml_keys(rest[0], rest[1:])
    elif cmd == "readme-helm":
        readme_helm()
    elif cmd == "image":
        check_image()
    elif cmd == "runtime-libs":
        check_runtime_libs(rest[0])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
