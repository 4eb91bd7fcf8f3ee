"""Attacks by a model, end to end: ``ttscale serve`` and ``ttscale mcp`` run them and stay up.

A scripted model (``--backend scripted --script FILE.json``) answers each attack question
with a ```python block that attacks: an infinite loop, a fork bomb, a memory bomb, a
daemonised grandchild, writes outside the work directory (into a pytest tmp dir on the host
and into the repository), a dump of the environment hunting for the server's secrets (the
server runs with ``OPENAI_API_KEY`` set to a fake key and its own bearer key in
``TTSCALE_API_KEY``), connections to a socket the test listens on at 127.0.0.1 (and to the
server's own port), 100 MB of stdout, a segfault, and 32 programs in one request. The
``program`` strategy runs them in the server's sandbox (``default_sandbox()``); the loop,
network and environment attacks also go through ``tir``, whose ```output blocks put a
program's output into the reply text.

After every attack: the response is a normal completion (HTTP 200 / a tool result that is
not an error) with the failure classified, no secret anywhere in it, the host unharmed (no
file written, the listening socket never accepted, no process left of the server's sandbox
uids, read from the uid lock files the server holds, and nothing but bwrap and the worker
in each worker sandbox), and the next request ("What is 12*7?", a program printing 84)
answers 84 from the same server process.

Both servers run as real subprocesses, one per test class (``serve`` on a free port with the
official ``openai`` client; ``mcp`` over stdio with the official MCP client, its session
held open in a thread of its own). Waits are on events under generous deadlines, never on
sleeps of a guessed length; programs get small limits through the strategies' ``timeout``
option. Needs namespace isolation (bubblewrap) and skips with the reason otherwise.

    .venv/bin/python -m pytest tests/test_sandbox_servers.py -q
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import openai
import pytest

from ttscale.sandbox import detect_isolation

ROOT = Path(__file__).resolve().parents[1]
ISOLATION = detect_isolation()
pytestmark = pytest.mark.skipif(
    ISOLATION.level != "namespaces",
    reason=f"the servers' sandbox needs namespace isolation (bubblewrap): {ISOLATION.detail}",
)

SECRET = f"sk-test-SECRET123{uuid.uuid4().hex[:12]}"
"""In the servers' environment as OPENAI_API_KEY; must never come back."""
KEY = f"serve-key-{uuid.uuid4().hex}"
"""The serve bearer key, in its environment as TTSCALE_API_KEY; must never come back."""
LEAK_MARKERS = (SECRET, "SECRET123", KEY)
DEADLINE_S = 300.0  # generous: a loaded 2-core CI box; nothing comes near it unless broken
CAPS = "tokens=65536,rollouts=64,seconds=240"
BENIGN = "What is 12*7?"
MANY = "Thirty-two programs at once: what is twelve times seven?"
FIRST_UID, LAST_UID = 61000, 64999  # ttscale.sandbox.sandbox's program uid range
LOCK = re.compile(r"/ttscale-sandbox(?:-uids)?/(\d+)\.lock$")


# -- the attacks ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Attack:
    """One attack program and what a server must make of it."""

    code: str
    """A ``string.Template``: $tmp (a pytest tmp dir on the host), $repo, $token, $port
    (the test's listening socket), $serve_port."""
    answer: str | None
    """The executed answer: ``None`` for a program that fails, else what it prints last
    (``0``: nothing found or connected; ``7``: it ran to the end)."""
    failure: str | None
    """The strategy's ``failures`` class of each of its programs (``None``: none failed)."""
    timeout: float = 5.0
    """The strategy's per-program ``timeout`` option (CPU seconds; wall twice that)."""


ATTACKS: dict[str, Attack] = {
    "loop": Attack("while True:\n    pass\n", None, "timeout", timeout=1),
    "fork_bomb": Attack(
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        None,
        "timeout",
        timeout=1,
    ),
    "memory_bomb": Attack(
        "import numpy as np\n"
        "hoard = []\n"
        "for make in (lambda: np.ones((1 << 17, 1 << 17)), lambda: 'x' * 10**11):\n"
        "    try:\n"
        "        hoard.append(make())\n"
        "    except MemoryError:\n"
        "        pass\n"
        "hoard.append(bytearray(10**12))\n",
        None,
        "exception",
    ),
    "daemon": Attack(
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        os.closerange(0, 3)\n"
        "        while True:\n"
        "            for path in ('$tmp/daemon-$token', '$repo/daemon-$token'):\n"
        "                try:\n"
        "                    open(path, 'w').write('still here')\n"
        "                except OSError:\n"
        "                    pass\n"
        "            time.sleep(0.1)\n"
        "    os._exit(0)\n"
        "os.wait()\n"
        "print(7)\n",
        "7",
        None,
    ),
    "write_outside": Attack(
        "import os\n"
        "for path in ('$tmp/escape-$token', '$tmp/deeper/escape-$token', "
        "'$repo/escape-$token', '/tmp/escape-$token', '/var/tmp/escape-$token'):\n"
        "    try:\n"
        "        os.makedirs(os.path.dirname(path), exist_ok=True)\n"
        "        open(path, 'w').write('escaped')\n"
        "        print('wrote', path)\n"
        "    except OSError as e:\n"
        "        print('denied', path, type(e).__name__)\n"
        "print(7)\n",
        "7",
        None,
    ),
    "env_secret": Attack(
        "import os, re\n"
        "blob = repr(dict(os.environ))\n"
        "for pid in os.listdir('/proc'):\n"
        "    if pid.isdigit() or pid in ('self', 'thread-self'):\n"
        "        try:\n"
        "            blob += open(f'/proc/{pid}/environ', 'rb').read().decode('latin-1')\n"
        "        except OSError as e:\n"
        "            blob += f' /proc/{pid}/environ: {type(e).__name__}'\n"
        "print(blob.replace(chr(0), ' '))\n"
        "hits = re.findall(r'sk-test-\\w+|serve-key-\\w+|OPENAI_API_KEY|TTSCALE_API_KEY', blob)\n"
        "print(' '.join(hits) or 0)\n",
        "0",
        None,
    ),
    "network": Attack(
        "import socket\n"
        "connected = 0\n"
        "for host, port in (('127.0.0.1', $port), ('localhost', $port), "
        "('127.0.0.1', $serve_port)):\n"
        "    s = socket.socket()\n"
        "    s.settimeout(2)\n"
        "    try:\n"
        "        s.connect((host, port))\n"
        "        s.sendall(b'GET /health HTTP/1.0\\r\\n\\r\\n')\n"
        "        connected += 1\n"
        "    except OSError as e:\n"
        "        print('failed', host, port, type(e).__name__)\n"
        "    finally:\n"
        "        s.close()\n"
        "print(connected)\n",
        "0",
        None,
    ),
    "stdout_flood": Attack(
        "import sys\nchunk = 'x' * 10**6\nfor _ in range(100):\n    sys.stdout.write(chunk)\n",
        None,
        "output_limit",
    ),
    "segfault": Attack("import ctypes\nctypes.string_at(0)\n", None, "killed"),
}
TIR_ATTACKS = ("loop", "network", "env_secret")
MCP_ATTACKS = ("loop", "fork_bomb", "env_secret", "network", "write_outside", "stdout_flood")


def question(name: str) -> str:
    return f"Attack {name}: run this program and report what it prints."


def reply(code: str) -> str:
    """A model reply: one ```python block (closed, so ``tir`` runs it too)."""
    return f"I will run a program.\n```python\n{code.rstrip()}\n```\n"


MANY_CODE = (
    "import os, time\n"
    "if os.fork() == 0:\n"  # a child left behind by every one of the 32
    "    time.sleep(120)\n"
    "    os._exit(0)\n"
    "print(12 * 7)\n"
)


@dataclass
class Context:
    """What the attacks aim at, fixed before the servers start (the script is a file)."""

    tmp: Path
    token: str
    listener: socket.socket
    serve_port: int
    script: Path

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def code(self, name: str) -> str:
        return string.Template(ATTACKS[name].code).substitute(
            tmp=self.tmp, repo=ROOT, token=self.token, port=self.port, serve_port=self.serve_port
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    context = Context(
        tmp=tmp_path_factory.mktemp("host"),
        token=uuid.uuid4().hex,
        listener=listener,
        serve_port=_free_port(),
        script=tmp_path_factory.mktemp("script") / "attacks.json",
    )
    script = {question(name): [reply(context.code(name))] for name in ATTACKS}
    script[MANY] = [reply(MANY_CODE)]
    script[BENIGN] = [reply("print(12 * 7)")]
    context.script.write_text(json.dumps(script))
    try:
        yield context
    finally:
        listener.close()


# -- the host ------------------------------------------------------------------------------------
def processes() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, real uid) of every process on the host."""
    out = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        out[int(p)] = (int(fields["PPid"].split()[0]), int(fields["Uid"].split()[0]))
    return out


def descendants(pid: int, procs: dict[int, tuple[int, int]]) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, (pp, _) in procs.items() if pp == parent]
        found += kids
        frontier += kids
    return found


def argv0(pid: int) -> str:
    try:
        return os.path.basename(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode())
    except OSError:
        return ""


def sandbox_uids(server_pid: int) -> set[int]:
    """The program uids a server's sandbox claimed: the uid lock files it holds open."""
    uids = set()
    fds = Path(f"/proc/{server_pid}/fd")
    for fd in fds.iterdir() if fds.exists() else []:
        try:
            m = LOCK.search(os.readlink(fd))
        except OSError:
            continue
        if m and FIRST_UID <= int(m.group(1)) <= LAST_UID:
            uids.add(int(m.group(1)))
    return uids


def wait_until(predicate, seconds: float = 60.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def worker_sandboxes(server_pid: int, procs: dict[int, tuple[int, int]]) -> list[int]:
    """The server's sandbox workers: its bwrap children."""
    return [p for p, (pp, _) in procs.items() if pp == server_pid and argv0(p) == "bwrap"]


def leftovers(server_pid: int, uids: set[int]) -> list[str]:
    """What a program left on the host: any process of the sandbox's uids, anywhere, and in
    each worker sandbox anything beyond bwrap's init, the worker and its idle runner."""
    procs = processes()
    found = [f"pid {p} uid {u}" for p, (_, u) in procs.items() if u in uids]
    for w in worker_sandboxes(server_pid, procs):
        inside = descendants(w, procs)
        if len(inside) > 3 or any(procs[p][1] != procs[w][1] for p in inside if p in procs):
            found.append(f"worker sandbox {w} holds {len(inside)} processes: {inside}")
    return found


def assert_host_unharmed(ctx: Context, server_pid: int, uids: set[int]) -> None:
    assert uids, "the server's sandbox holds no program uids: did it start?"
    assert worker_sandboxes(server_pid, processes()), "the server has no sandbox workers"
    assert wait_until(lambda: not leftovers(server_pid, uids)), leftovers(server_pid, uids)
    escaped = list(ctx.tmp.rglob("*")) + [
        p for where in (ROOT, Path("/tmp"), Path("/var/tmp")) for p in where.glob(f"*{ctx.token}*")
    ]
    assert escaped == [], f"written on the host: {escaped}"
    with pytest.raises(BlockingIOError):  # nothing ever connected to the test's socket
        conn, _ = ctx.listener.accept()
        conn.close()


def assert_no_secret(text: str) -> None:
    for marker in LEAK_MARKERS:
        assert marker not in text, f"{marker!r} leaked into the response"


def log_tail(log: IO[str]) -> str:
    log.flush()
    log.seek(0)
    return log.read()[-4000:]


# -- ttscale serve ---------------------------------------------------------------------------
@dataclass
class Served:
    proc: subprocess.Popen
    url: str
    log: IO[str]
    client: openai.OpenAI
    uids: set[int] = field(default_factory=set)

    def alive(self) -> None:
        assert self.proc.poll() is None, f"ttscale serve died:\n{log_tail(self.log)}"

    def ask(
        self, text: str, strategy: str = "program", *, budget: str = "rollouts=2", **options: Any
    ) -> tuple[str, dict[str, Any]]:
        """One request with the official client: (raw JSON text, the ttscale extension)."""
        opts = {"n": 2, "round_size": 2, "adaptive": False, "max_tokens": 2048, **options}
        raw = self.client.chat.completions.with_raw_response.create(
            model=f"ttscale/{strategy}",
            messages=[{"role": "user", "content": text}],
            extra_body={"budget": budget, "options": opts},
        )
        assert raw.http_response.status_code == 200, raw.http_response.text
        completion = raw.parse()
        assert completion.object == "chat.completion" and completion.choices, completion
        assert completion.choices[0].finish_reason in ("stop", "length")
        ext = completion.model_extra["ttscale"]
        assert ext["strategy"] == strategy
        self.uids |= sandbox_uids(self.proc.pid)
        return raw.http_response.text, {**ext, "content": completion.choices[0].message.content}

    def assert_answers_84(self, strategy: str = "program") -> None:
        self.alive()
        _, ext = self.ask(BENIGN, strategy)
        assert ext["answer"] == "84", ext
        assert [(v["answer"], v["votes"]) for v in ext["votes"]] == [("84", 2)], ext["votes"]


@pytest.fixture(scope="class")
def served(ctx: Context):
    log = tempfile.TemporaryFile("w+")
    env = {**os.environ, "OPENAI_API_KEY": SECRET, "TTSCALE_API_KEY": KEY}
    env.pop("TTSCALE_SANDBOX", None)  # namespaces, never the weak mode
    cmd = [
        sys.executable,
        "-m",
        "ttscale.cli",
        "serve",
        "--backend",
        "scripted",
        "--script",
        str(ctx.script),
        "--port",
        str(ctx.serve_port),
        "--max-budget",
        CAPS,
        "--timeout",
        str(DEADLINE_S),
    ]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{ctx.serve_port}"
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=DEADLINE_S)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            try:
                httpx.get(f"{url}/health", timeout=2).raise_for_status()
                break
            except httpx.TransportError:
                assert proc.poll() is None, f"ttscale serve exited:\n{log_tail(log)}"
                assert time.monotonic() < deadline, "ttscale serve did not start"
                time.sleep(0.2)
        yield Served(proc, url, log, client)
    finally:
        client.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=60)
        log.close()


class TestServe:
    """The attacks through ``ttscale serve`` (one server for the class)."""

    def test_answers_84_before_any_attack(self, served: Served) -> None:
        served.assert_answers_84()
        served.assert_answers_84("tir")

    @pytest.mark.parametrize("name", list(ATTACKS))
    def test_program_attack(self, served: Served, ctx: Context, name: str) -> None:
        attack = ATTACKS[name]
        text, ext = served.ask(question(name), timeout=attack.timeout)
        served.alive()
        assert_no_secret(text)
        assert ext["answer"] == attack.answer, ext
        assert [c["answer"] for c in ext["candidates"]] == [attack.answer] * 2, ext
        failures = {attack.failure: 2} if attack.failure else {}
        assert ext["extras"]["failures"] == failures, ext["extras"]
        assert_host_unharmed(ctx, served.proc.pid, served.uids)
        served.assert_answers_84()

    @pytest.mark.parametrize("name", TIR_ATTACKS)
    def test_tir_attack(self, served: Served, ctx: Context, name: str) -> None:
        attack = ATTACKS[name]
        text, ext = served.ask(
            question(name), "tir", budget="rollouts=4", max_calls=1, timeout=attack.timeout
        )
        served.alive()
        assert_no_secret(text)
        assert ext["answer"] == attack.answer, ext
        # The program's output (or its failure) was shown back to the model.
        assert "```output\n" in ext["content"], ext["content"]
        if name == "loop":
            assert "TimeoutError: the program ran past its time limit" in ext["content"]
            assert ext["extras"]["failures"] == {"timeout": 2}, ext["extras"]
        assert_host_unharmed(ctx, served.proc.pid, served.uids)
        served.assert_answers_84("tir")

    def test_32_programs_in_one_request(self, served: Served, ctx: Context) -> None:
        _, ext = served.ask(
            MANY, budget="rollouts=32", n=32, round_size=32, max_tokens=512, timeout=5
        )
        assert ext["answer"] == "84", ext
        assert [c["answer"] for c in ext["candidates"]] == ["84"] * 32
        assert ext["extras"]["failures"] == {}
        assert_host_unharmed(ctx, served.proc.pid, served.uids)
        served.assert_answers_84()

    def test_attacks_alongside_honest_requests(self, served: Served, ctx: Context) -> None:
        """Attacks in flight do not break requests running beside them."""
        names = ("fork_bomb", "loop", "stdout_flood", "segfault")
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            attacks = [
                pool.submit(served.ask, question(n), timeout=ATTACKS[n].timeout) for n in names
            ]
            honest = [pool.submit(served.ask, BENIGN) for _ in range(4)]
            for future in attacks:
                text, ext = future.result(timeout=DEADLINE_S)
                assert_no_secret(text)
                assert ext["answer"] is None, ext
            for future in honest:
                assert future.result(timeout=DEADLINE_S)[1]["answer"] == "84"
        assert_host_unharmed(ctx, served.proc.pid, served.uids)
        served.assert_answers_84()

    def test_stopping_the_server_leaves_nothing_behind(self, served: Served) -> None:
        served.assert_answers_84()
        uids = served.uids | sandbox_uids(served.proc.pid)
        assert uids
        workers = worker_sandboxes(served.proc.pid, processes())
        served.proc.send_signal(signal.SIGINT)
        assert served.proc.wait(timeout=DEADLINE_S) == 0, log_tail(served.log)

        def gone() -> bool:
            return not any(u in uids or p in workers for p, (_, u) in processes().items())

        assert wait_until(gone), "sandbox processes outlived ttscale serve"
        assert SECRET not in log_tail(served.log)


# -- ttscale mcp (stdio) ------------------------------------------------------------------------
class StdioMcp:
    """An MCP client session over stdio, held open by an event loop in a thread of its own,
    so that the (sync) tests of a class share one ``ttscale mcp`` subprocess."""

    def __init__(self, params: Any, errlog: IO[str]) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="mcp-client")
        self.thread.daemon = True
        self.thread.start()
        self.session: Any = None
        self._open: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._stop: asyncio.Event | None = None
        self._main = asyncio.run_coroutine_threadsafe(self._hold(params, errlog), self.loop)
        done, _ = concurrent.futures.wait(
            [self._open, self._main], DEADLINE_S, concurrent.futures.FIRST_COMPLETED
        )
        if self._main in done:
            self._main.result()  # raises why the session ended
        assert self._open in done, "the MCP session did not open"

    async def _hold(self, params: Any, errlog: IO[str]) -> None:
        from mcp import ClientSession
        from mcp.client.stdio import stdio_client

        self._stop = asyncio.Event()
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            self.session = session
            self._open.set_result(None)
            await self._stop.wait()

    def solve(self, text: str, **arguments: Any) -> Any:
        call = self.session.call_tool("solve", {"question": text, **arguments})
        return asyncio.run_coroutine_threadsafe(call, self.loop).result(timeout=DEADLINE_S)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        try:
            if self._stop is not None:
                self.loop.call_soon_threadsafe(self._stop.set)
            self._main.result(timeout=DEADLINE_S)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=60)
            self.loop.close()


@dataclass
class McpServer:
    client: StdioMcp
    pid: int
    log: IO[str]
    uids: set[int] = field(default_factory=set)

    def alive(self) -> None:
        assert Path(f"/proc/{self.pid}").exists(), f"ttscale mcp died:\n{log_tail(self.log)}"

    def ask(
        self, text: str, strategy: str = "program", *, budget: str = "rollouts=2", **options: Any
    ) -> tuple[str, dict[str, Any]]:
        """One ``solve`` call: (the whole result as JSON text, its structured content)."""
        opts = {"n": 2, "round_size": 2, "adaptive": False, "max_tokens": 2048, **options}
        result = self.client.solve(text, strategy=strategy, budget=budget, options=opts)
        assert not result.is_error, result.content
        self.uids |= sandbox_uids(self.pid)
        out = result.structured_content
        assert out["strategy"] == strategy
        return result.model_dump_json(), out

    def assert_answers_84(self, strategy: str = "program") -> None:
        self.alive()
        _, out = self.ask(BENIGN, strategy)
        assert out["answer"] == "84", out
        assert [(v["answer"], v["votes"]) for v in out["votes"]] == [("84", 2)]


def _mcp_pid(script: Path) -> int | None:
    """The ``ttscale mcp`` child of this process serving ``script``."""
    me = os.getpid()
    for pid, (ppid, _) in processes().items():
        if ppid != me:
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"mcp" in argv and str(script).encode() in argv:
            return pid
    return None


@pytest.fixture(scope="class")
def mcp_server(ctx: Context):
    pytest.importorskip("mcp", reason="needs the mcp extra: pip install 'ttscale[mcp]'")
    from mcp import StdioServerParameters

    env = {**os.environ, "OPENAI_API_KEY": SECRET, "TTSCALE_API_KEY": KEY}
    env.pop("TTSCALE_SANDBOX", None)
    params = StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "ttscale.cli",
            "mcp",
            "--backend",
            "scripted",
            "--script",
            str(ctx.script),
            "--max-budget",
            CAPS,
            "--timeout",
            str(DEADLINE_S),
        ],
        env=env,
        cwd=str(ROOT),
    )
    log = tempfile.TemporaryFile("w+")
    client = StdioMcp(params, log)
    try:
        pid = _mcp_pid(ctx.script)
        assert pid is not None, "cannot find the ttscale mcp process"
        yield McpServer(client, pid, log)
    finally:
        client.close()
        log.close()


class TestMcp:
    """The attacks through ``ttscale mcp`` over stdio (one server for the class)."""

    def test_answers_84_before_any_attack(self, mcp_server: McpServer) -> None:
        mcp_server.assert_answers_84()

    @pytest.mark.parametrize("name", MCP_ATTACKS)
    def test_program_attack(self, mcp_server: McpServer, ctx: Context, name: str) -> None:
        attack = ATTACKS[name]
        text, out = mcp_server.ask(question(name), timeout=attack.timeout)
        mcp_server.alive()
        assert_no_secret(text)
        assert out["answer"] == attack.answer, out
        assert_host_unharmed(ctx, mcp_server.pid, mcp_server.uids)
        mcp_server.assert_answers_84()

    @pytest.mark.parametrize("name", ("loop", "network", "env_secret"))
    def test_tir_attack(self, mcp_server: McpServer, ctx: Context, name: str) -> None:
        attack = ATTACKS[name]
        text, out = mcp_server.ask(
            question(name), "tir", budget="rollouts=4", max_calls=1, timeout=attack.timeout
        )
        mcp_server.alive()
        assert_no_secret(text)
        assert out["answer"] == attack.answer, out
        assert "```output\n" in out["solution"], out["solution"]
        assert_host_unharmed(ctx, mcp_server.pid, mcp_server.uids)
        mcp_server.assert_answers_84("tir")

    def test_closing_the_session_leaves_nothing_behind(self, mcp_server: McpServer) -> None:
        mcp_server.assert_answers_84()
        uids = mcp_server.uids | sandbox_uids(mcp_server.pid)
        workers = worker_sandboxes(mcp_server.pid, processes())
        assert uids and workers
        mcp_server.client.close()  # the client closes stdin: the server exits

        def gone() -> bool:
            return not any(
                u in uids or p in (mcp_server.pid, *workers) for p, (_, u) in processes().items()
            )

        assert wait_until(gone), "ttscale mcp or its sandbox outlived the session"
        assert SECRET not in log_tail(mcp_server.log)
