"""Build the Go and JavaScript consumer images daemonless, as docker-archives ``ctr images import`` reads.

* Go: ``CGO_ENABLED=0 go build`` of ``go/`` (aws-sdk-go-v2 ``config`` + ``service/sts``, pinned by its
  ``go.mod``/``go.sum``, from the Go module proxy) into a static binary, packed ``FROM scratch`` like the
  pause image: one layer, one file.
* JavaScript: Debian **trixie**'s ``nodejs`` (20.19; ``@aws-sdk/*`` needs node >= 20 and bookworm, the
  operator image's suite, has 18) and its libraries, extracted by ``mmdebstrap --variant=extract`` with
  no shell, no apt, no dpkg database: the first layer. ``npm ci`` of ``js/package-lock.json`` on this
  machine (the modules are plain JavaScript, so the host's node and npm install what the image's node
  runs) plus ``consumer.mjs``: the second layer.

Every artefact is cached under ``~/.cache/vault-sts-operator`` (``VSO_CACHE``) by a hash of its inputs:
a warm build only hashes. The archives are reproducible (every mtime 0, sorted entries).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devstack.pause import cache_dir
from devstack.procs import StackError

HERE = Path(__file__).resolve().parent
GO_DIR = HERE / "go"
JS_DIR = HERE / "js"
PYTHON_SCRIPT = HERE / "python_consumer.py"
GO_INPUTS = ("main.go", "go.mod", "go.sum")
JS_INPUTS = ("package.json", "package-lock.json", "consumer.mjs")
REPOSITORY = "vso.local/consumer"
USER = "65532:65532"  # as the operator image: no passwd entry, as a restricted pod runs it
KEEP = 3  # archives kept per kind (several checkouts share the cache; an edit makes a new one)

JAVA_DIR = HERE / "java"
JAVA_INPUTS = ("pom.xml", "Consumer.java")
JAVA_RELEASE = "17"  # the JDK that compiles it (the machine's) and the JRE that runs it (bookworm's)
JAVA_HOME = f"/usr/lib/jvm/java-{JAVA_RELEASE}-openjdk-amd64"


def _mirrors(suite: str) -> tuple[str, ...]:
    return (f"deb http://deb.debian.org/debian {suite} main",
            f"deb http://deb.debian.org/debian {suite}-updates main",
            f"deb http://deb.debian.org/debian-security {suite}-security main")


def _recipe(suite: str, packages: str) -> str:
    return json.dumps({"variant": "extract", "suite": suite, "include": packages, "mirrors": _mirrors(suite),
                       "layer": 1})


NODE_SUITE, NODE_PACKAGES = "trixie", "nodejs"
NODE_RECIPE = _recipe(NODE_SUITE, NODE_PACKAGES)
JRE_SUITE, JRE_PACKAGES = "bookworm", f"openjdk-{JAVA_RELEASE}-jre-headless"
JRE_RECIPE = _recipe(JRE_SUITE, JRE_PACKAGES)
# merged /usr: the packages ship only /usr/...; dpkg's base-files (not extracted) would make these
USR_MERGE = (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"), ("sbin", "usr/sbin"))


@dataclass(frozen=True)
class Image:
    sdk: str
    reference: str
    archive: Path


def _log(message: str) -> None:
    import sys

    print(f"[consumers {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _hash(parts: list[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def _files(directory: Path, names: tuple[str, ...]) -> list[bytes]:
    return [name.encode() + b"\0" + (directory / name).read_bytes() for name in names]


@contextmanager
def _lock(name: str) -> Iterator[None]:
    """One build of each artefact at a time per cache (several checkouts share it)."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _run(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600
         ) -> None:
    done = subprocess.run(argv, cwd=cwd, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise StackError(f"{' '.join(argv[:4])} ... failed ({done.returncode}):\n"
                         f"{(done.stdout + done.stderr)[-3000:]}")


def _cached(out: Path, build: Callable[[Path], None], lock: str) -> Path:
    """``out`` if present, else ``build(tmp)`` renamed to ``out`` (a crash leaves no half-written hit)."""
    if out.exists():
        return out
    with _lock(lock):
        if out.exists():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
        if tmp.is_dir():
            shutil.rmtree(tmp)
        tmp.unlink(missing_ok=True)
        try:
            build(tmp)
            tmp.rename(out)
            _prune(out)
        finally:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            elif tmp.exists():
                tmp.unlink()
    return out


def _prune(newest: Path) -> None:
    """Keep the ``KEEP`` newest artefacts of ``newest``'s kind (its name up to the hash)."""
    kind = newest.name.rsplit("-", 1)[0]
    same = sorted(newest.parent.glob(f"{kind}-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [p for p in same if not p.name.endswith(".tmp") and p.name.rsplit("-", 1)[0] == kind][KEEP:]:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


# --------------------------------------------------------------------------- docker-archive


def _tarinfo(name: str, *, size: int = 0, mode: int = 0o644, kind: bytes = tarfile.REGTYPE, link: str = ""
             ) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.type, info.linkname = size, mode, 0, kind, link
    return info


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_docker_archive(out: Path, reference: str, layers: list[Path], config: dict[str, object]) -> None:
    """A ``docker save``-format archive of ``layers`` (uncompressed layer tarballs, bottom first)."""
    diff_ids = [_sha256_file(layer) for layer in layers]
    image_config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in diff_ids]},
        "history": [{"created_by": "devstack/consumers/images.py"} for _ in layers],
    }, sort_keys=True).encode()
    config_name = hashlib.sha256(image_config).hexdigest() + ".json"
    layer_names = [f"{d}/layer.tar" for d in diff_ids]
    manifest = json.dumps([{"Config": config_name, "RepoTags": [reference], "Layers": layer_names}]).encode()
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_tarinfo(config_name, size=len(image_config)), io.BytesIO(image_config))
        for name, layer in zip(layer_names, layers, strict=True):
            with layer.open("rb") as f:
                tar.addfile(_tarinfo(name, size=layer.stat().st_size), f)
        tar.addfile(_tarinfo("manifest.json", size=len(manifest)), io.BytesIO(manifest))


def _add_tree(tar: tarfile.TarFile, source: Path, prefix: str) -> None:
    """``source`` under ``prefix`` in the layer: sorted, mtime 0, owner root, modes kept (reproducible)."""
    for path in [source, *sorted(source.rglob("*"))]:
        name = prefix if path == source else f"{prefix}/{path.relative_to(source).as_posix()}"
        if path.is_symlink():
            tar.addfile(_tarinfo(name, kind=tarfile.SYMTYPE, mode=0o777, link=os.readlink(path)))
        elif path.is_dir():
            tar.addfile(_tarinfo(name, kind=tarfile.DIRTYPE, mode=0o755))
        else:
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            with path.open("rb") as f:
                tar.addfile(_tarinfo(name, size=path.stat().st_size, mode=mode), f)


# --------------------------------------------------------------------------- Go


def go_key() -> str:
    version = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, check=False).stdout.strip()
    return _hash([*_files(GO_DIR, GO_INPUTS), version.encode(), b"CGO_ENABLED=0 -trimpath -s -w amd64"])


def build_go() -> Image:
    if shutil.which("go") is None:
        raise StackError("go is missing: the Go consumer is built with the Go toolchain (scripts/system-deps.sh)")
    key = go_key()
    reference = f"{REPOSITORY}-go:{key}"

    def build(tmp: Path) -> None:
        started = time.monotonic()
        with tempfile.TemporaryDirectory() as work:
            binary = Path(work) / "consumer"
            _run(["go", "build", "-mod=readonly", "-trimpath", "-ldflags=-s -w", "-o", str(binary), "."],
                 cwd=GO_DIR, env={"CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": "amd64", "GOFLAGS": "-buildvcs=false"},
                 timeout=900)
            layer = Path(work) / "layer.tar"
            with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar, binary.open("rb") as f:
                tar.addfile(_tarinfo("consumer", size=binary.stat().st_size, mode=0o755), f)
            write_docker_archive(tmp, reference, [layer], {"Entrypoint": ["/consumer"], "User": USER})
        _log(f"built {reference} in {time.monotonic() - started:.1f}s")

    return Image("go", reference, _cached(cache_dir() / f"consumer-go-{key}.tar", build, "consumer-go"))


# --------------------------------------------------------------------------- JavaScript


def debian_layer(name: str, suite: str, packages: str) -> Path:
    """Debian ``suite``'s ``packages`` and their dependencies, extracted (no maintainer script runs), as a layer
    tarball cached by recipe."""
    recipe = _recipe(suite, packages)
    key = hashlib.sha256(recipe.encode()).hexdigest()[:16]

    def build(tmp: Path) -> None:
        if shutil.which("mmdebstrap") is None:
            raise StackError("mmdebstrap is missing (`bash scripts/system-deps.sh demo` installs it as root)")
        started = time.monotonic()
        with tempfile.TemporaryDirectory() as work:
            rootfs = Path(work) / "rootfs.tar"
            _run(["mmdebstrap", "--variant=extract", f"--include={packages}", "--quiet",
                  suite, str(rootfs), *_mirrors(suite)], timeout=1200)
            _rootfs_to_layer(rootfs, tmp)
        _log(f"{packages} from Debian {suite} extracted in {time.monotonic() - started:.1f}s "
             f"({tmp.stat().st_size / 1e6:.0f} MB)")

    return _cached(cache_dir() / f"consumer-{name}-{suite}-{key}.tar", build, f"consumer-{name}")


def _rootfs_to_layer(rootfs: Path, out: Path) -> None:
    """Keep the packages' files; drop device nodes (the runtime makes /dev), apt's and dpkg's leftovers and
    the documentation; add the merged-/usr links and a /tmp."""
    skip = ("dev/", "var/", "etc/apt/", "etc/dpkg/", "usr/share/doc/", "usr/share/man/", "usr/share/lintian/")
    seen: set[str] = set()
    with tarfile.open(rootfs) as src, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
        for member in src:
            name = member.name.removeprefix("./").rstrip("/")
            if not name or any(name.startswith(s) or f"{name}/" == s for s in skip) or member.isdev():
                continue
            member.name, member.mtime = name, 0
            seen.add(name)
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        for link, target in USR_MERGE:
            if link not in seen:
                dst.addfile(_tarinfo(link, kind=tarfile.SYMTYPE, mode=0o777, link=target))
        if "tmp" not in seen:
            dst.addfile(_tarinfo("tmp", kind=tarfile.DIRTYPE, mode=0o1777))


def js_key() -> str:
    return _hash([*_files(JS_DIR, JS_INPUTS), NODE_RECIPE.encode()])


def node_modules() -> Path:
    """``npm ci`` of the lockfile, cached by the lockfile's hash."""
    if shutil.which("npm") is None:
        raise StackError("npm is missing: the JavaScript consumer's modules are installed with npm")
    key = _hash(_files(JS_DIR, ("package.json", "package-lock.json")))

    def build(tmp: Path) -> None:
        started = time.monotonic()
        tmp.mkdir(parents=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(JS_DIR / name, tmp / name)
        _run(["npm", "ci", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
             cwd=tmp, timeout=600)
        _log(f"npm ci in {time.monotonic() - started:.1f}s")

    return _cached(cache_dir().parent / "npm" / f"consumer-js-{key}", build, "consumer-npm")


def build_js() -> Image:
    key = js_key()
    reference = f"{REPOSITORY}-js:{key}"

    def build(tmp: Path) -> None:
        base, modules = debian_layer("node", NODE_SUITE, NODE_PACKAGES), node_modules()
        started = time.monotonic()
        with tempfile.TemporaryDirectory() as work:
            app = Path(work) / "app"
            app.mkdir()
            shutil.copy2(JS_DIR / "consumer.mjs", app / "consumer.mjs")
            shutil.copy2(JS_DIR / "package.json", app / "package.json")
            shutil.copytree(modules / "node_modules", app / "node_modules", symlinks=True)
            layer = Path(work) / "app.tar"
            with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
                _add_tree(tar, app, "app")
            write_docker_archive(tmp, reference, [base, layer], {
                "Entrypoint": ["/usr/bin/node", "/app/consumer.mjs"], "WorkingDir": "/app", "User": USER,
                "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
            })
        _log(f"built {reference} in {time.monotonic() - started:.1f}s")

    return Image("js", reference, _cached(cache_dir() / f"consumer-js-{key}.tar", build, "consumer-js"))


# --------------------------------------------------------------------------- Java


def java_key() -> str:
    return _hash([*_files(JAVA_DIR, JAVA_INPUTS), JRE_RECIPE.encode(), JAVA_RELEASE.encode()])


def java_libraries() -> Path:
    """The SDK's jars (``mvn dependency:copy-dependencies`` of the pom), cached by the pom's hash."""
    if shutil.which("mvn") is None:
        raise StackError("mvn is missing: the Java consumer's jars come from Maven")
    key = _hash(_files(JAVA_DIR, ("pom.xml",)))

    def build(tmp: Path) -> None:
        started = time.monotonic()
        _run(["mvn", "--batch-mode", "--quiet", "--file", str(JAVA_DIR / "pom.xml"),
              "dependency:copy-dependencies", f"-DoutputDirectory={tmp}", "-Dmdep.useBaseVersion=true"],
             cwd=JAVA_DIR, timeout=900)
        shutil.rmtree(JAVA_DIR / "target", ignore_errors=True)
        _log(f"mvn dependency:copy-dependencies in {time.monotonic() - started:.1f}s")

    return _cached(cache_dir().parent / "maven" / f"consumer-java-{key}", build, "consumer-maven")


def build_java() -> Image:
    if shutil.which("javac") is None:
        raise StackError(f"javac is missing: the Java consumer is compiled with a JDK >= {JAVA_RELEASE}")
    key = java_key()
    reference = f"{REPOSITORY}-java:{key}"

    def build(tmp: Path) -> None:
        base, libraries = debian_layer("jre", JRE_SUITE, JRE_PACKAGES), java_libraries()
        started = time.monotonic()
        with tempfile.TemporaryDirectory() as work:
            app = Path(work) / "app"
            shutil.copytree(libraries, app / "lib")
            _run(["javac", "--release", JAVA_RELEASE, "-cp", f"{libraries}/*", "-d", str(app),
                  str(JAVA_DIR / "Consumer.java")])
            layer = Path(work) / "app.tar"
            with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
                _add_tree(tar, app, "app")
            write_docker_archive(tmp, reference, [base, layer], {
                # a small heap and one GC thread: a loop of one call every few seconds
                "Entrypoint": [f"{JAVA_HOME}/bin/java", "-XX:+UseSerialGC", "-Xmx64m", "-XX:TieredStopAtLevel=1",
                               "-cp", "/app/lib/*:/app", "Consumer"],
                "WorkingDir": "/app", "User": USER, "Env": [f"JAVA_HOME={JAVA_HOME}", "PATH=/usr/bin:/bin"],
            })
        _log(f"built {reference} in {time.monotonic() - started:.1f}s")

    return Image("java", reference, _cached(cache_dir() / f"consumer-java-{key}.tar", build, "consumer-java"))


BUILDERS: dict[str, Callable[[], Image]] = {"go": build_go, "js": build_js, "java": build_java}
