"""DRAFT, to be merged into test_lynkr.py: the documentation's command examples are run, its links resolve.

    python -m pytest test_docs_draft.py -q -p no:cacheprovider -x

The convention (docs/development.md, "Documentation tests"): a fenced block whose language is `sh`,
`bash`, `shell` or `console` in README.md or docs/*.md is a command example.  An HTML comment on the
line directly before its fence says how it is tested; without one the block is run for real.

    (no marker)                           run with `bash -euo pipefail`, in a scratch git workspace, against
                                          a lynkr with a fake Databricks upstream: must exit 0.  A `console`
                                          block is a transcript: each `$ ` command is run on its own and its
                                          output must look like the one shown (same JSON; the keys shown;
                                          or the first line with other numbers).
    <!-- doc-test: serves -->             starts lynkr, which serves until stopped: each line is run in turn
                                          in a fresh folder; a line either finishes with status 0 or starts
                                          a lynkr that must answer GET /health (provider and configuration
                                          as the line says) and is then stopped.
    <!-- doc-test: session -->            starts an interactive Claude Code session: run with `-p` and a
                                          prompt added to `claude`, against lynkr and the fake upstream; the
                                          fake's answer must come back.
    <!-- doc-test: ci -->                 run by .ci/run: .ci/run must run exactly these commands.
    <!-- doc-test: needs a real provider -->  not run (reported as a skip).

Rewrites before a block runs: `127.0.0.1:8080` and `localhost:8080` become the test proxy's port,
`python lynkr.py` is this interpreter on this checkout's lynkr.py, `pip install` is this interpreter's
pip, and `examples/...` is this checkout's examples folder.  examples/*.sh are run the way their headers
say, against the same proxy.
"""

from test_lynkr import *  # the harness: base_env, start_proxy, FakeDatabricks, model_turn, ...
from test_lynkr import _isolated  # noqa: F401 (the autouse fixture; `import *` skips underscored names)

# Draft only: `import *` also brought test_lynkr's tests, which pytest would collect here again.
for _name in [n for n in list(globals()) if n.startswith(("Test", "test_"))]:
    del globals()[_name]

# == Documentation: command examples and links ==

DOC_FILES = [HERE / "README.md", *sorted((HERE / "docs").glob("*.md"))]
COMMAND_LANGS = {"sh", "bash", "shell", "console"}
DOC_MARKERS = {
    "serves": "starts lynkr, which serves until stopped: each line runs; a serving line must answer GET /health",
    "session": "starts an interactive Claude Code session: run with -p and a prompt against the fake upstream",
    "ci": ".ci/run runs exactly these commands",
    "needs a real provider": "not run",
}
DOC_MARKER = re.compile(r"^\s*<!--\s*doc-test:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^\s`]*)")
DOC_APP_PY = 'def hello():\n    return "hi"\n'  # docs/tools-and-policy.md's transcript shows exactly this file
DOC_CLI_PY = "from app import hello\n\n\ndef main():\n    print(hello())\n"  # workspace-session.sh looks up `main`
DOC_ANSWER = "Hello from fake Databricks"  # FakeDatabricks's default answer


@dataclasses.dataclass
class DocBlock:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str  # the content, de-indented by the fence's indentation
    marker: str | None
    marker_line: int | None  # 1-based
    closed: bool

    @property
    def is_command(self) -> bool:
        return self.lang in COMMAND_LANGS

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(HERE)}:{self.line}"


def doc_blocks(path: Path) -> list[DocBlock]:
    lines = path.read_text(encoding="utf-8").split("\n")
    blocks: list[DocBlock] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = len(m.group(1)), m.group(2), m.group(3).lower()
        mk = DOC_MARKER.match(lines[i - 1]) if i else None
        body, j, closed = [], i + 1, False
        while j < len(lines):
            s = lines[j].strip()
            if s.startswith(fence[0] * len(fence)) and not s.strip(fence[0]):
                closed = True
                break
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j].lstrip())
            j += 1
        blocks.append(DocBlock(path, i + 1, lang, "\n".join(body), mk.group(1) if mk else None, i if mk else None,
                               closed))
        i = j + 1
    return blocks


def command_blocks() -> list[DocBlock]:
    return [b for p in DOC_FILES for b in doc_blocks(p) if b.is_command]


def _block_id(b: DocBlock) -> str:
    same_file = [x for x in command_blocks() if x.path == b.path]
    return f"{b.path.relative_to(HERE)}#{same_file.index(b) + 1}"


def rewrite_command(text: str, port: int | None = None) -> str:
    """A documented command as the test runs it (see the module docstring)."""
    if port is not None:
        text = re.sub(r"\b(127\.0\.0\.1|localhost):8080\b", rf"\g<1>:{port}", text)
    text = re.sub(r"(?<![\w/.-])python3? lynkr\.py\b", f"{shlex.quote(sys.executable)} {shlex.quote(str(LYNKR))}", text)
    text = re.sub(r"(?<![\w/.-])pip install\b", f"{shlex.quote(sys.executable)} -m pip install", text)
    return re.sub(r"(?<![\w/.-])examples/", shlex.quote(str(HERE / "examples")) + "/", text)


def command_lines(text: str) -> list[str]:
    """The commands of a block: continuation lines joined, blank and comment-only lines left out."""
    out, cur = [], ""
    for line in text.split("\n"):
        cur += line
        if cur.endswith("\\"):
            cur = cur[:-1] + " "
            continue
        if cur.strip() and not cur.strip().startswith("#"):
            out.append(cur.strip())
        cur = ""
    return out


def transcript(text: str) -> list[tuple[str, str]]:
    """A console block as [(command, output shown)]: `$ ` lines are commands, the lines after them output."""
    pairs: list[tuple[str, list[str]]] = []
    for line in text.split("\n"):
        if line.startswith("$ "):
            pairs.append((line[2:], []))
        elif pairs and pairs[-1][1] == [] and pairs[-1][0].endswith("\\"):
            pairs[-1] = (pairs[-1][0][:-1] + " " + line.strip(), [])
        elif pairs:
            pairs[-1][1].append(line)
    return [(cmd, "\n".join(out).strip()) for cmd, out in pairs]


def json_keys(obj: Any) -> set[str]:
    if isinstance(obj, dict):
        return set(obj) | {k for v in obj.values() for k in json_keys(v)}
    if isinstance(obj, list):
        return {k for v in obj for k in json_keys(v)}
    return set()


def check_shown_output(shown: str, got: str, where: str) -> None:
    """The output a transcript shows against the real one: the same JSON, when one line of JSON is shown;
    JSON with (at least) the keys shown, when it is shortened or wrapped; for text, the same first line
    up to its numbers."""
    if not shown:
        return
    try:
        want = json.loads(shown) if "\n" not in shown else None
    except ValueError:
        want = None
    if want is not None:
        assert json.loads(got) == want, f"{where}: output differs from the one shown:\n{got}"
        return
    if shown[0] in "{[":
        try:
            actual = json.loads(got)
        except ValueError:
            raise AssertionError(f"{where}: expected JSON, got:\n{got[:2000]}") from None
        missing = set(re.findall(r'"([A-Za-z_][\w-]*)":', shown)) - json_keys(actual)
        assert not missing, f"{where}: keys shown but not in the output: {sorted(missing)}\n{got[:2000]}"
        return
    first, got_first = shown.split("\n")[0], got.split("\n")[0]
    pattern = re.sub(r"\d+(?:\\\.\d+)?", r"\\d+(?:\\.\\d+)?", re.escape(first))
    assert re.fullmatch(pattern, got_first), f"{where}: first line {got_first!r} is not like {first!r}"


def gh_anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings (lower case, punctuation dropped, spaces to
    hyphens, -1, -2, ... for repeats), plus explicit <a id/name> anchors."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    in_fence = False
    for line in path.read_text(encoding="utf-8").split("\n"):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        out.update(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", line))
        m = None if in_fence else re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1)).replace("`", "").replace("*", "")
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def doc_links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every inline Markdown link or image outside code."""
    out, in_fence = [], False
    for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        line = re.sub(r"`[^`]*`", "", line)
        out += [(n, t) for t in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", line)]
    return out


@dataclasses.dataclass
class DocsStack:
    fake: FakeDatabricks
    proxy: Proxy
    tmp: Path
    ws: Path
    env: dict  # the proxy's environment; blocks run with it too

    def run_env(self, **extra: Any) -> dict[str, str]:
        return {**self.env, "LYNKR_URL": self.proxy.url, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1",
                **{k: str(v) for k, v in extra.items()}}


def docs_workspace(ws: Path) -> Path:
    """What the documentation's transcripts assume: src/app.py (and a src/cli.py that calls it), committed
    in a git repository."""
    (ws / "src").mkdir(parents=True)
    (ws / "src" / "app.py").write_text(DOC_APP_PY)
    (ws / "src" / "cli.py").write_text(DOC_CLI_PY)
    git = ["git", "-c", "user.name=Docs", "-c", "user.email=docs@example.com", "-c", "init.defaultBranch=main"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "initial"]):
        subprocess.run([*git, *args], cwd=ws, check=True, capture_output=True)
    return ws


def record_demo_session(stack: DocsStack) -> None:
    """The session docs/operations.md exports: one turn in which the model calls a server tool
    (workspace_search) and a client tool (Bash), so the transcript has every kind of entry."""
    stack.fake.push(model_turn("dbx", "Searching.", calls=(("toolu_s7", "workspace_search", {"query": "hello"}),
                                                           ("toolu_b8", "Bash", {"command": "ls"}))))
    bash = {"name": "Bash", "description": "Run a command",
            "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}
    r = stack.proxy.post({"model": "claude-sonnet-4-5", "max_tokens": 256,
                          "tools": [{"name": "workspace_search"}, bash],
                          "messages": [{"role": "user", "content": "search and bash"}]},
                         headers={"x-session-id": "demo-3"})
    assert r.status == 200 and r.json()["stop_reason"] == "tool_use", r.data[:2000]


@pytest.fixture(scope="module")
def docs_stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("docs")
    ws = docs_workspace(tmp / "ws")
    fake = FakeDatabricks()
    extra = dbx_env(fake, WORKSPACE_ROOT=str(ws))
    try:
        proxy = start_proxy(tmp, extra)
    except BaseException:
        fake.close()
        raise
    stack = DocsStack(fake, proxy, tmp, ws, base_env(tmp, extra))
    try:
        record_demo_session(stack)
        yield stack
    finally:
        proxy.stop()
        fake.close()


def run_bash(script: str, cwd: Path, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"still running after {timeout}s: {script}\n{(e.stderr or b'')[-2000:]!r}") from None


def check_serves(b: DocBlock, tmp: Path) -> None:
    wd = tmp / "serve"
    wd.mkdir()
    served, lines = 0, command_lines(b.text)
    for n, line in enumerate(lines):
        port = free_port()
        env = base_env(wd, {"LYNKR_PORT": port, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"})
        log = tmp / f"serve-{port}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", rewrite_command(line)], cwd=wd, env=env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        answer, deadline = None, time.monotonic() + 60
        try:
            while answer is None and proc.poll() is None and time.monotonic() < deadline:
                try:
                    answer = call(port, "GET", "/health", timeout=5)
                except OSError:
                    time.sleep(0.05)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
        output = log.read_text(errors="replace")[-3000:]
        if answer is None:
            assert proc.returncode == 0, f"{b.where}: `{line}` exited {proc.returncode} and never served:\n{output}"
            continue
        served += 1
        assert answer.status == 200, f"{b.where}: `{line}`: GET /health answered {answer.status}: {answer.data[:500]!r}"
        health = answer.json()
        assigned = re.findall(r"(?:^|\s)([A-Z][A-Z0-9_]*)=\S*", line.split("python")[0])
        provider = re.search(r"\bMODEL_PROVIDER=(\S+)", line)
        wrote_env = any(re.search(r"\s\.env\b", earlier) for earlier in lines[:n])
        assert health.get("status") == "ok", (b.where, line, health)
        assert health.get("provider") == (provider.group(1) if provider else "databricks"), (b.where, line, health)
        # A line that names a provider (or a block that wrote a .env) must leave it configured; a bare
        # `python lynkr.py` must start unconfigured, as the README says.
        names_provider = wrote_env or any(v == "MODEL_PROVIDER" or v.startswith("DATABRICKS_") for v in assigned)
        if names_provider or not assigned:
            assert health.get("configured") is names_provider, (
                f"{b.where}: `{line}`: configured={health.get('configured')}, expected {names_provider}:\n{output}")
    assert served, f"{b.where}: marked `serves` but no line started a lynkr that answered /health"


def check_session(b: DocBlock, stack: DocsStack, tmp: Path) -> None:
    claude = claude_bin()
    require_e2e(f"the Claude Code CLI {CLAUDE_VERSION}", claude is not None)
    text = rewrite_command(b.text, stack.proxy.port)
    script = re.sub(r"^(\s*(?:exec\s+)?)claude\b(.*)$", r"\1claude\2 -p 'Say hello.'", text, flags=re.M)
    assert script != text, f"{b.where}: marked `session` but runs no `claude`"
    home = tmp / "claude-home"
    home.mkdir()
    env = stack.run_env(HOME=home, PATH=f"{Path(claude).parent}:{stack.env['PATH']}")
    p = run_bash(script, tmp, env, timeout=90)
    assert p.returncode == 0 and DOC_ANSWER in p.stdout, (
        f"{b.where}: exit {p.returncode}\nstdout: {p.stdout[-2000:]}\n"
        f"stderr: {p.stderr[-2000:]}\nproxy: {stack.proxy.stderr[-2000:]}")


def check_ci(b: DocBlock) -> None:
    ci = (HERE / ".ci" / "run").read_text()
    ci = ci.replace('"$PYTHON"', "python").replace('"${PIPX[@]}"', "pipx")
    for cmd in command_lines(b.text):
        cmd = re.sub(r"\s+#.*$", "", cmd)
        assert re.search(r"(?:^\s*|\$\()" + re.escape(cmd) + r"(?:\s*$|\s+2>&1|\))", ci, re.M), (
            f"{b.where}: marked `ci` but .ci/run does not run `{cmd}`")


@pytest.mark.parametrize("block", command_blocks(), ids=_block_id)
def test_doc_command_example(block: DocBlock, request, tmp_path):
    """Every command example in README.md and docs/*.md runs (or is checked the way its marker says)."""
    if block.marker == "needs a real provider":
        pytest.skip(f"{block.where}: marked as needing a real provider")
    if block.marker == "ci":
        return check_ci(block)
    if block.marker == "serves":
        return check_serves(block, tmp_path)
    stack: DocsStack = request.getfixturevalue("docs_stack")
    if block.marker == "session":
        return check_session(block, stack, tmp_path)
    assert block.marker is None, f"{block.where}: unknown marker {block.marker!r}"
    env = stack.run_env()
    runs = [(block.text, "")] if block.lang != "console" else transcript(block.text)
    for cmd, shown in runs:
        p = run_bash(rewrite_command(cmd, stack.proxy.port), stack.ws, env)
        where = block.where if block.lang != "console" else f"{block.where}: `{cmd}`"
        assert p.returncode == 0, (
            f"{where}: exit {p.returncode}\nstdout: {p.stdout[-2000:]}\nstderr: {p.stderr[-2000:]}")
        check_shown_output(shown, p.stdout.strip(), where)


def test_doc_blocks_are_well_formed():
    """Markers are known and sit right before a command block; every fence names its language; shell
    transcripts are `console` blocks; every fence is closed."""
    problems = []
    for path in DOC_FILES:
        lines = path.read_text(encoding="utf-8").split("\n")
        blocks = doc_blocks(path)
        marker_lines = {b.marker_line for b in blocks if b.marker_line is not None}
        for n, line in enumerate(lines):
            if DOC_MARKER.match(line) and n + 1 not in marker_lines:
                problems.append(f"{path.relative_to(HERE)}:{n + 1}: a doc-test marker must be right before a fence")
        for b in blocks:
            first = next((x for x in b.text.split("\n") if x.strip()), "")
            if not b.closed:
                problems.append(f"{b.where}: the fence is never closed")
            if not b.lang:
                problems.append(f"{b.where}: a fence must name its language (`text` for plain text)")
            if b.marker is not None and b.marker not in DOC_MARKERS:
                problems.append(f"{b.where}: unknown marker {b.marker!r}; known: {sorted(DOC_MARKERS)}")
            if b.marker is not None and not b.is_command:
                problems.append(f"{b.where}: a marker on a `{b.lang}` block, which is not a command example")
            if b.lang in ("sh", "bash", "shell") and re.search(r"^\$ ", b.text, re.M):
                problems.append(f"{b.where}: a transcript with `$ ` prompts must be a `console` block")
            if not b.is_command and first.startswith("$ "):
                problems.append(f"{b.where}: a `{b.lang or 'plain'}` block that starts with `$ `: make it `console`")
            if b.lang == "console" and not transcript(b.text):
                problems.append(f"{b.where}: a `console` block without a `$ ` command")
    assert not problems, "\n".join(problems)


def test_doc_links_resolve():
    """Every relative link in README.md and docs/*.md names a file that exists, and an anchor its headings make."""
    broken = []
    for path in DOC_FILES:
        for n, target in doc_links(path):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(HERE)}:{n}: ({target})"
            if not dest.exists():
                broken.append(f"{where}: {file_part} does not exist")
            elif anchor and dest.suffix == ".md" and anchor not in gh_anchors(dest):
                broken.append(f"{where}: {dest.name} has no heading with the anchor #{anchor}")
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme():
    readme = (HERE / "README.md").read_text(encoding="utf-8")
    unlinked = [p.name for p in DOC_FILES[1:] if f"](docs/{p.name})" not in readme]
    assert not unlinked, f"README.md's 'Where to read more' does not link {unlinked}"


# examples/*.sh, run as their headers say: arguments, extra environment, what the output must contain.
EXAMPLE_SCRIPTS: dict[str, tuple[tuple[str, ...], dict[str, str], tuple[str, ...]]] = {
    "curl-session.sh": ((), {}, (DOC_ANSWER, '"invalid_request_error"', "lynkr_requests_total")),
    "tools-session.sh": ((), {}, ('"is_error":false', "denied:", "src/app.py:1:def hello():", DOC_ANSWER,
                                  '"data":[')),
    "workspace-session.sh": ((), {}, ("is_error: False", '"branch"', '"name": "main"', "src/cli.py",
                                      "lynkr_requests_total")),
    "claude-code.sh": (("-p", "Say hello."), {}, (DOC_ANSWER,)),
}


@pytest.mark.parametrize("script", sorted(p.name for p in (HERE / "examples").glob("*.sh")))
def test_example_script(script, docs_stack, tmp_path):
    assert script in EXAMPLE_SCRIPTS, f"examples/{script} is not run by any test: add it to EXAMPLE_SCRIPTS"
    args, extra, expect = EXAMPLE_SCRIPTS[script]
    env = docs_stack.run_env(**extra)
    if script == "claude-code.sh":
        claude = claude_bin()
        require_e2e(f"the Claude Code CLI {CLAUDE_VERSION}", claude is not None)
        (tmp_path / "home").mkdir()
        env.update(HOME=str(tmp_path / "home"), PATH=f"{Path(claude).parent}:{env['PATH']}",
                   ANTHROPIC_BASE_URL=docs_stack.proxy.url)
    p = subprocess.run(["bash", "-euo", "pipefail", str(HERE / "examples" / script), *args], cwd=docs_stack.ws, env=env,
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    diag = f"exit {p.returncode}\nstdout: {p.stdout[-3000:]}\nstderr: {p.stderr[-3000:]}"
    assert p.returncode == 0, diag
    assert "curl: (" not in p.stderr, diag
    for want in expect:
        assert want in p.stdout, f"{want!r} not in the output of examples/{script}\n{diag}"
