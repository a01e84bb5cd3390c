from test_lynkr import *  # draft section: appended to test_lynkr.py without this line
from test_lynkr import _isolated  # the autouse fixture (underscore names are not star-imported)

# Draft only (a no-op once appended to test_lynkr.py): keep the star-imported test classes and functions
# from being collected a second time here, so this file runs just its own tests.
for _name, _obj in list(globals().items()):
    if _name.startswith(("Test", "test_")) and getattr(_obj, "__module__", None) == "test_lynkr" \
            and __name__ != "test_lynkr":
        del globals()[_name]

# == 13-15. Confinement: git, subprocess environments, HTTP, web, MCP ==
#
# Each test replays an attack from issue 14 against the real proxy (real sockets, real git repositories,
# real MCP servers) and checks the safe outcome: nothing staged or fetched, no marker file, no secret in a
# tool result, the session store or the upstream request, a closed connection, a refused start-up.

CONF_SECRETS = {"DATABRICKS_API_KEY": DBX_KEY, "LYNKR_API_KEY": "lynkr-env-canary-2222",
                "OPENAI_API_KEY": "sk-openai-env-canary-3333", "AZURE_ANTHROPIC_API_KEY": "azure-env-canary-4444"}
CONF_GLOB_REFUSED = re.compile(r"not accepted", re.I)
CONF_ENV_DUMP = """\
import json, os
print("ENV " + json.dumps(dict(os.environ)))
print("============================== 1 passed in 0.01s ===============================")
"""
CONF_MARKER_HOOK = """#!/bin/sh
echo {what} >> "{marker}"
exit 0
"""


def conf_call(proxy: Proxy, name: str, args: dict | None = None, headers: dict | None = None,
              timeout: float = 60) -> dict:
    """POST /v1/tools/{name} with extra headers (a LYNKR_API_KEY, an Origin): the {content, is_error} body."""
    r = proxy.call("POST", f"/v1/tools/{name}", args or {}, headers=headers, timeout=timeout)
    assert r.status == 200, (name, r.status, r.data[:2000])
    body = r.json()
    assert set(body) == {"content", "is_error"}, body
    return body


def conf_glob_refused(msg: str) -> None:
    assert CONF_GLOB_REFUSED.search(msg) and re.search(r"glob|magic|pathspec", msg, re.I), msg


def conf_executable(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    path.chmod(0o755)
    return path


class TestConfinementGitPathspecs:
    """Item 1: the path check sees a literal string; git must get a literal pathspec."""

    def _secrets(self, gws: GitWS) -> None:
        gws.write(".env", "API_TOKEN=env-canary-9d2e\n")  # untracked, blocked by default
        gws.write("src/server.pem", "-----BEGIN PRIVATE KEY-----\npem-canary-77b1\n")

    @pytest.mark.parametrize("spec", [".e*", "*", ":(glob)**", ":(icase).ENV", "src/*", ".en[v]", ":!README.md",
                                      "?env"])
    def test_globs_and_magic_are_refused_and_nothing_is_staged(self, gws, spec):
        self._secrets(gws)
        gws.write("src/app.py", "def main():\n    return 2\n")
        gws.start()
        msg = gws.err("workspace_git_stage", {"paths": [spec]})
        conf_glob_refused(msg)
        assert gws.staged() == [], f"{spec!r} staged {gws.staged()}"
        # one magic entry spoils the whole call: nothing of the literal neighbour is staged either
        gws.err("workspace_git_stage", {"paths": ["src/app.py", spec]})
        assert gws.staged() == []
        assert gws.git("diff", "--cached") == ""

    def test_folders_stage_their_files_but_never_blocked_ones(self, gws):
        self._secrets(gws)
        gws.write("src/.env", "NESTED=nested-env-canary-31aa\n")
        gws.write("src/conf/.ENV", "UPPER=upper-env-canary-8b8b\n")  # the blocked-path match ignores case
        gws.write("src/keys/id.PEM", "-----BEGIN PRIVATE KEY-----\nupper-pem-canary\n")
        gws.write("src/app.py", "def main():\n    return 3\n")
        gws.write("src/new.py", "Y = 2\n")
        gws.write("docs/guide.md", "guide\n")
        gws.start()
        gws.ok("workspace_git_stage", {"paths": ["src"]})
        assert gws.staged() == ["src/app.py", "src/new.py"]
        gws.ok("workspace_git_stage", {"paths": ["."]})
        assert gws.staged() == ["docs/guide.md", "src/app.py", "src/new.py"]
        cached = gws.git("diff", "--cached")
        assert "canary" not in cached, cached
        staged_diff = gws.ok("workspace_git_diff", {"staged": True})
        assert "canary" not in staged_diff

    def test_diff_log_unstage_obey_the_same_rules(self, gws):
        gws.write(".env", "API_TOKEN=old\n")
        gws.git("add", "-f", ".env")  # tracked by hand (a project that committed one): the model must not read it
        gws.git("commit", "-q", "-m", "env")
        gws.write(".env", "API_TOKEN=diff-canary-5c3f\n")
        gws.write("src/app.py", "def main():\n    return 4\n")
        gws.git("add", "src/app.py")
        gws.start()
        for spec in (".e*", "*", ":(icase).ENV", ":(glob)**"):
            for args in ({"paths": [spec]}, {"paths": [spec], "staged": True}):
                content, is_error = gws.call("workspace_git_diff", args)
                assert is_error is True, (args, content)
                conf_glob_refused(content)
                assert "diff-canary" not in content
            content, is_error = gws.call("workspace_git_log", {"path": spec})
            assert is_error is True, (spec, content)
            conf_glob_refused(content)
            content, is_error = gws.call("workspace_git_unstage", {"paths": [spec]})
            assert is_error is True, (spec, content)
            conf_glob_refused(content)
            assert gws.staged() == ["src/app.py"]
        # literal names still work
        assert "return 4" in gws.ok("workspace_git_diff", {"paths": ["src/app.py"], "staged": True})
        gws.ok("workspace_git_unstage", {"paths": ["src/app.py"]})
        assert gws.staged() == []

    def test_workspace_in_a_subfolder_never_reaches_the_rest_of_the_repo(self, gws):
        gws.write("parent_secret.txt", "parent-canary-0\n")
        gws.commit_all("parent file")
        gws.write("parent_secret.txt", "parent-canary-8e41\n")  # modified, outside the workspace
        gws.write("new_parent.txt", "parent-canary-new\n")  # untracked, outside the workspace
        gws.write("sub/inner.py", "Z = 1\n")
        proxy = start_proxy(gws.tmp, {"WORKSPACE_ROOT": str(gws.repo / "sub"), "LYNKR_INDEX_ON_START": "false"})
        gws.proxies.append(proxy)
        gws.proxy = proxy
        for spec in (":(top)parent_secret.txt", ":/parent_secret.txt", ":(top)*", ":(top,literal)parent_secret.txt",
                     "../parent_secret.txt", str(gws.repo / "parent_secret.txt")):
            content, is_error = gws.call("workspace_git_stage", {"paths": [spec]})
            assert is_error is True, (spec, content)
            assert gws.staged() == [], (spec, gws.staged())
            content, _ = gws.call("workspace_git_diff", {"paths": [spec]})
            assert "parent-canary" not in content, (spec, content)
        for args in ({"paths": ["."]}, {"all": True}):
            gws.ok("workspace_git_stage", args)
            assert gws.staged() == ["sub/inner.py"], (args, gws.staged())
        for args in ({}, {"staged": True}, {"paths": ["."]}, {"from_ref": "HEAD~1", "to_ref": "HEAD"}):
            content, _ = gws.call("workspace_git_diff", args)
            assert "parent-canary" not in content, (args, content)
        content, _ = gws.call("workspace_diff_review", {"from_ref": "HEAD~1"})
        assert "parent_secret" not in content and "parent-canary" not in content, content


class TestConfinementGitRemotes:
    """Item 2: a remote is a name `git remote` lists, never a path (a symlink out of the workspace)."""

    def _outside_repos(self, gws: GitWS) -> tuple[Path, Path, str]:
        elsewhere = gws.tmp / "elsewhere"
        other = elsewhere / "otherrepo"
        other.mkdir(parents=True)
        gw_git(other, "init", "-q", "-b", "main")
        gw_git(other, "config", "user.name", "Eve")
        gw_git(other, "config", "user.email", "eve@example.com")
        (other / "loot.txt").write_text("outside-canary-4f0d\n")
        gw_git(other, "add", "-A")
        gw_git(other, "commit", "-q", "-m", "outside commit")
        bare = elsewhere / "otherbare.git"
        gw_git(gws.tmp, "init", "-q", "--bare", "-b", "main", str(bare))
        (gws.repo / "linkout").symlink_to(elsewhere, target_is_directory=True)
        return other, bare, gw_git(other, "rev-parse", "HEAD").strip()

    def test_pull_and_push_by_path_are_refused_and_touch_nothing(self, gws):
        other, bare, outside_sha = self._outside_repos(gws)
        gws.write("src/app.py", "def main():\n    return 5\n")
        local = gws.commit_all("local work")
        gws.start(POLICY_GIT_ALLOW_PUSH="true")
        for remote in ("linkout/otherrepo", "linkout/otherrepo/.git", "./linkout/otherrepo", str(other),
                       f"file://{other}"):
            content, is_error = gws.call("workspace_git_pull", {"remote": remote})
            assert is_error is True, (remote, content)
            assert "outside-canary" not in content, (remote, content)
            if remote.startswith("linkout/"):  # a well-formed name that is no remote: the answer lists the real ones
                assert "origin" in content, (remote, content)
        fetched = subprocess.run(["git", "cat-file", "-e", outside_sha], cwd=gws.repo, env=gw_git_env(),
                                 capture_output=True, timeout=30)
        assert fetched.returncode != 0, "an outside repository's commit was fetched"
        assert not (gws.repo / ".git" / "FETCH_HEAD").exists() or outside_sha not in \
            (gws.repo / ".git" / "FETCH_HEAD").read_text()
        assert gws.head() == local and not (gws.repo / "loot.txt").exists()
        for remote in ("linkout/otherbare.git", str(bare)):
            content, is_error = gws.call("workspace_git_push", {"remote": remote, "branch": "main"})
            assert is_error is True, (remote, content)
            if remote.startswith("linkout/"):
                assert "origin" in content, (remote, content)
        assert gw_git(gws.tmp, "--git-dir", str(bare), "for-each-ref").strip() == "", "a push wrote outside"
        # the configured remote still works both ways
        gws.ok("workspace_git_push", {"remote": "origin", "branch": "main"})
        assert gws.remote_head() == local
        gws.ok("workspace_git_pull", {"remote": "origin"})
        assert gws.head() == local


class TestConfinementSubprocessEnv:
    """Item 3: programs run by tools get an allowlisted environment."""

    def test_test_runs_and_hooks_never_see_keys(self, gws, new_dbx):
        fake = new_dbx()
        hook_env_file = gws.repo / ".git" / "hook-env.json"  # inside: a sandbox may keep the rest read-only
        script = gws.out / "envdump.py"
        script.write_text(CONF_ENV_DUMP)
        conf_executable(gws.repo / ".git" / "hooks" / "post-commit",
                        f"#!{sys.executable}\nimport json, os, pathlib\n"
                        f"pathlib.Path({str(hook_env_file)!r}).write_text(json.dumps(dict(os.environ)))\n")
        lkey = CONF_SECRETS["LYNKR_API_KEY"]
        hdr = {"x-api-key": lkey}
        gws.start(**CONF_SECRETS, DATABRICKS_API_BASE=fake.url, MY_VAR="my-var-passes-5555", OTHER_VAR="other-6666",
                  LYNKR_SUBPROCESS_ENV="MY_VAR", POLICY_GIT_ALLOW_HOOKS="true", LYNKR_TOOLS="*",
                  WORKSPACE_TEST_COMMAND=shlex.join([sys.executable, str(script)]))
        p = gws.proxy
        body = conf_call(p, "workspace_test_run", {}, hdr)
        assert body["is_error"] is False, body
        dumped = [ln[4:] for ln in body["content"].splitlines() if ln.startswith("ENV {")]
        assert len(dumped) == 1, body["content"][-3000:]
        seen = json.loads(dumped[0])
        for name, value in CONF_SECRETS.items():
            assert name not in seen and value not in json.dumps(seen), f"{name} reached the test command"
            assert value not in json.dumps(body), f"{name} is in the tool result"
        assert seen.get("MY_VAR") == "my-var-passes-5555", sorted(seen)
        assert "OTHER_VAR" not in seen, "a variable nobody allowed reached the test command"
        assert seen.get("PATH") and seen.get("HOME"), sorted(seen)  # what programs need still arrives
        assert not any(k.startswith(("LYNKR_", "DATABRICKS_", "AZURE_", "OPENAI_", "WORKSPACE_", "MODEL_"))
                       for k in seen), sorted(seen)

        # the same run through the model: neither the upstream nor the session store gets a key
        fake.push(model_turn("dbx", None, [("call_env", "workspace_test_run", {})]), model_turn("dbx", "Tests ran."))
        sid = "conf-env-session"
        r = p.post(base_req(messages=[user("run the tests")]), headers={**hdr, "x-session-id": sid}, timeout=90)
        assert r.status == 200, r.data[:2000]
        assert "ENV {" in results_seen(fake.last)["call_env"], "the tool result did not reach the model"
        stored = p.call("GET", f"/v1/sessions/{sid}", headers=hdr)
        assert stored.status == 200, stored.data[:500]
        for value in CONF_SECRETS.values():
            for rec in fake.requests:
                assert value.encode() not in rec.raw, f"{value} sent upstream in a tool result"
            assert value.encode() not in stored.data, f"{value} stored in the session"

        # git hooks (allowed here) get the same scrubbed environment
        gws.write("src/app.py", "def main():\n    return 6\n")
        assert conf_call(p, "workspace_git_stage", {"paths": ["src/app.py"]}, hdr)["is_error"] is False
        commit = conf_call(p, "workspace_git_commit", {"message": "hooked"}, hdr)
        assert commit["is_error"] is False, commit
        hook_seen = json.loads(hook_env_file.read_text())
        for name, value in CONF_SECRETS.items():
            assert value not in json.dumps(hook_seen), f"{name} reached a git hook"
        assert hook_seen.get("MY_VAR") == "my-var-passes-5555" and "PATH" in hook_seen


class TestConfinementGitHooks:
    """Item 4: tool-driven git runs no hook or fsmonitor the model can write, and no implicit bare repo."""

    def test_hooks_path_into_the_workspace_is_not_run_unless_allowed(self, gws):
        marker = gws.repo / ".git" / "hook-ran"  # inside: hooks may one day run in the sandbox
        for hook in ("pre-commit", "commit-msg", "post-commit"):
            conf_executable(gws.repo / ".githooks" / hook, CONF_MARKER_HOOK.format(what=hook, marker=marker))
        gws.git("config", "core.hooksPath", ".githooks")
        gws.write("src/app.py", "def main():\n    return 7\n")
        gws.git("add", "src/app.py")
        before = gws.head()
        gws.start()
        assert gws.ok("workspace_git_commit", {"message": "no hooks"}).startswith("committed")
        assert gws.head("HEAD~1") == before
        assert not marker.exists(), "a hook under core.hooksPath ran"
        gws.write("src/app.py", "def main():\n    return 8\n")
        gws.git("add", "src/app.py")
        gws.start(POLICY_GIT_ALLOW_HOOKS="true")
        assert gws.ok("workspace_git_commit", {"message": "with hooks"}).startswith("committed")
        ran = marker.read_text().split() if marker.exists() else []
        assert "post-commit" in ran, f"POLICY_GIT_ALLOW_HOOKS=true: the hooks should run: {ran}"
        assert "pre-commit" in ran, f"POLICY_GIT_ALLOW_HOOKS=true: pre-commit did not run (commit --no-verify?): {ran}"

    @staticmethod
    def _bare_layout(ws: Path, marker: Path) -> None:
        """What fs_write alone can lay out in the workspace root: a repository git discovers as bare, whose
        config names a worktree and an fsmonitor command (run through the shell)."""
        ws.mkdir(exist_ok=True)
        (ws / "HEAD").write_text("ref: refs/heads/main\n")
        (ws / "objects" / "info").mkdir(parents=True)
        (ws / "refs" / "heads").mkdir(parents=True)
        (ws / "config").write_text("[core]\n\trepositoryformatversion = 0\n\tbare = false\n\tworktree = .\n"
                                   f'\tfsmonitor = "echo fsmonitor >> {marker}; false"\n')
        (ws / "app.py").write_text("def visible():\n    return 1\n")
        assert not (ws / ".git").exists()
        probe = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=ws, env=gw_git_env(),
                               capture_output=True, text=True, timeout=30)
        assert probe.stdout.strip() == "true", f"git does not discover the layout: {probe.stderr}"

    def test_implicit_bare_repository_in_the_workspace_is_refused(self, tmp_path, make_proxy):
        ws, marker = tmp_path / "ws", tmp_path / "fsmonitor-ran"
        self._bare_layout(ws, marker)
        p = make_proxy({"WORKSPACE_ROOT": str(ws), "LYNKR_TOOLS": "*"})
        for name in ("workspace_git_status", "workspace_git_diff", "workspace_git_log", "workspace_git_branches"):
            body = conf_call(p, name)
            assert body["is_error"] is True, (name, body)
            assert "app.py" not in body["content"], body
        assert not marker.exists(), "git ran the fsmonitor of a repository laid out in the workspace"

    def test_index_never_runs_git_config_from_a_workspace_layout(self, tmp_path, make_proxy):
        # Issue 14 also names "the index's use of git": start-up indexing and workspace_index_rebuild.
        ws, marker = tmp_path / "ws", tmp_path / "fsmonitor-ran"
        self._bare_layout(ws, marker)
        p = make_proxy({"WORKSPACE_ROOT": str(ws), "LYNKR_TOOLS": "*", "LYNKR_INDEX_ON_START": "true"})
        for name in ("workspace_index_rebuild", "project_summary"):
            conf_call(p, name)
        time.sleep(0.3)
        ran = marker.read_text().split() if marker.exists() else []
        assert ran == [], f"the index's git ran the workspace's fsmonitor command {len(ran)} times"


class TestConfinementHTTP:
    """Items 5, 6, 13, 14: request framing, origins, header limit, rate limit identity."""

    @pytest.mark.parametrize("order", ["cl-first", "te-first", "te-uppercase"])
    def test_content_length_with_transfer_encoding_is_400_and_closes(self, dbx, order):
        smuggled = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        body = jbytes(base_req())
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        cl, te = b"content-length: %d\r\n" % len(chunked), b"transfer-encoding: chunked\r\n"
        framing = {"cl-first": cl + te, "te-first": te + cl,
                   "te-uppercase": b"Transfer-Encoding: CHUNKED\r\n" + cl}[order]
        head = (b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                b"anthropic-version: 2023-06-01\r\n" + framing + b"\r\n")
        with socket.create_connection(("127.0.0.1", dbx.proxy.port), timeout=10) as s:
            s.sendall(head + chunked)
            f = s.makefile("rb")
            status, _headers, data = read_response(f)
            time.sleep(0.2)
            try:
                s.sendall(smuggled)  # a second request on the same connection
            except OSError:
                pass
            s.settimeout(5)
            try:
                rest = f.read()
            except (TimeoutError, OSError) as exc:
                rest = f"(no EOF: {exc!r})".encode()
        assert status == 400 and json.loads(data)["error"]["type"] == "invalid_request_error", (status, data)
        assert rest == b"", f"the connection stayed open and answered again: {rest[:300]!r}"
        assert dbx.fake.requests == []

    @pytest.mark.parametrize("origin", ["http://localhost:3000", "http://127.0.0.1:5173", "http://[::1]:8080",
                                        "http://localhost", "http://127.0.0.2"])
    def test_foreign_loopback_origin_cannot_write(self, tmp_path, make_proxy, origin):
        p = make_proxy({"LYNKR_TOOLS": "*"})
        r = p.call("POST", "/v1/tools/fs_write", {"path": "pwned.txt", "content": "from a web page"},
                   headers={"origin": origin})
        assert r.status == 403 and r.etype == "permission_error", (origin, r.status, r.data[:300])
        assert not (tmp_path / "pwned.txt").exists()
        assert p.call("POST", "/v1/tools/fs_read", {"path": "pwned.txt"}, headers={"origin": origin}).status == 403
        assert p.call("GET", "/v1/sessions", headers={"origin": origin}).status == 403  # transcripts

    def test_own_origin_no_origin_and_allowlisted_origin(self, tmp_path, make_proxy):
        p = make_proxy({"LYNKR_TOOLS": "*"})
        own = f"http://127.0.0.1:{p.port}"
        written = conf_call(p, "fs_write", {"path": "own.txt", "content": "dashboard"}, {"origin": own})
        assert written["is_error"] is False, written
        assert (tmp_path / "own.txt").read_text() == "dashboard"
        assert conf_call(p, "fs_write", {"path": "cli.txt", "content": "curl"})["is_error"] is False  # no Origin
        r = p.call("POST", "/v1/tools/fs_write", {"path": "near.txt", "content": "no"},
                   headers={"origin": f"http://127.0.0.1:{p.port + 1}"})  # the next port: another local server
        assert r.status == 403 and r.etype == "permission_error", r.data[:300]
        assert not (tmp_path / "near.txt").exists()
        assert (tmp_path / "cli.txt").read_text() == "curl"
        q = make_proxy({"LYNKR_TOOLS": "*", "LYNKR_ALLOWED_ORIGINS": "http://localhost:3000"})
        assert conf_call(q, "fs_write", {"path": "dev.txt", "content": "dev"},
                         {"origin": "http://localhost:3000"})["is_error"] is False
        r = q.call("POST", "/v1/tools/fs_write", {"path": "dev2.txt", "content": "no"},
                   headers={"origin": "http://localhost:3001"})
        assert r.status == 403 and r.etype == "permission_error", r.data[:300]
        assert not (tmp_path / "dev2.txt").exists()

    @pytest.mark.parametrize("shape", ["one-header", "many-headers"])
    @pytest.mark.parametrize("pieces", [False, True], ids=["one-write", "4k-writes"])
    @pytest.mark.parametrize("kib,ok", [(60, True), (70, False), (100, False)])
    def test_header_limit_is_64_kib(self, dbx, kib, ok, pieces, shape):
        if shape == "one-header":
            pads = f"X-Pad: {'x' * (kib * 1024)}\r\n"
        else:  # 1 KiB lines: the limit is on the whole head, not one field
            pads = "".join(f"X-Pad-{i:03d}: {'y' * (1024 - 14)}\r\n" for i in range(kib))
        req = (f"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n{pads}Connection: close\r\n\r\n").encode()
        out = b""
        with socket.create_connection(("127.0.0.1", dbx.proxy.port), timeout=10) as s:
            try:
                for i in range(0, len(req), 4096 if pieces else len(req)):
                    if select.select([s], [], [], 0)[0]:
                        break  # answered mid-head: stop sending (more bytes could make the close a reset)
                    s.sendall(req[i : i + (4096 if pieces else len(req))])
                    if pieces:
                        time.sleep(0.002)
            except OSError:  # refused mid-head: the answer is already waiting
                pass
            try:
                while data := s.recv(65536):
                    out += data
            except ConnectionResetError:
                pass
        status = int(out.split(b" ", 2)[1]) if out.startswith(b"HTTP/1.") else None
        if ok:
            assert status == 200, out[:300]
        else:
            assert status in (431, 400), out[:300]

    def test_varying_client_key_does_not_escape_the_rate_limit(self, rel_stack):
        st_ = rel_stack("dbx", RATE_LIMIT_REQUESTS_PER_MIN=2)
        p = st_.proxy
        body = jbytes(base_req())
        statuses = []
        for i in range(3):
            hdrs = {"content-type": "application/json", "anthropic-version": "2023-06-01",
                    "x-api-key": f"made-up-key-{i}"}
            statuses.append(rel_raw_call(p.port, "POST", "/v1/messages", hdrs, body)[0])
        assert statuses == [200, 200, 429], statuses
        bearer = {"content-type": "application/json", "authorization": "Bearer yet-another-made-up-key"}
        assert rel_raw_call(p.port, "POST", "/v1/messages", bearer, body)[0] == 429
        assert len(st_.fake.requests) == 2


class TestConfinementWeb:
    """Item 7: web targets that are not globally routable are refused before connecting."""

    @pytest.mark.parametrize("url,address", [("http://100.64.0.1/", "100.64.0.1"),
                                             ("http://100.127.255.254:8080/x", "100.127.255.254"),
                                             ("http://[2002:7f00:1::]/", "2002:7f00:1::"),
                                             ("http://[fec0::1]/", "fec0::1"),
                                             ("http://[::ffff:127.0.0.1]/", "127.0.0.1"),
                                             # refused as reserved before the fix (::/8): must stay refused
                                             ("http://[::127.0.0.1]/", "127.0.0.1"),
                                             ("http://[64:ff9b:1::a00:1]/", "64:ff9b:1::a00:1")],  # local NAT64
                             ids=["shared-100.64", "shared-top", "6to4-loopback", "site-local", "v4-mapped-loopback",
                                  "v4-compatible-loopback", "local-use-nat64"])
    def test_not_globally_routable_refused_before_connecting(self, agent, web_server, url, address):
        # Any connection lynkr would open for web_fetch goes through HTTP_PROXY: a tripwire that records it.
        tripwire = web_server()
        st = agent(HTTP_PROXY=tripwire.url, LYNKR_TOOLS="*")
        t0 = time.monotonic()
        err = tool_err(st.port, "web_fetch", {"url": url})
        assert time.monotonic() - t0 < 5, "refusing should not wait on a connection"
        assert address in err and re.search(r"not\b.{0,12}\bglobally routable", err), err
        assert not re.search(r"cannot connect|unreachable|timed out|refused the connection", err, re.I), err
        assert tripwire.requests == [], f"lynkr connected for {url}: {tripwire.requests[0].target}"

    def test_search_endpoint_redirect_to_shared_address_refused(self, agent, web_server):
        tripwire, searx = web_server(), web_server()
        st = agent(HTTP_PROXY=tripwire.url, WEB_SEARCH_ENDPOINT=f"{searx.url}/search", LYNKR_TOOLS="*")
        searx.push(redirect("http://100.64.0.1/internal"))
        err = tool_err(st.port, "web_search", {"query": "anything"})
        assert "100.64.0.1" in err and re.search(r"not\b.{0,12}\bglobally routable", err), err
        assert tripwire.requests == [] and [r.path for r in searx.requests] == ["/search"]

    def test_allowlisted_shared_address_is_fetched(self, agent, web_server):
        tripwire = web_server()
        tripwire.push(html_reply("<p>allowlisted page</p>"))
        st = agent(HTTP_PROXY=tripwire.url, WEB_SEARCH_ALLOWED_HOSTS="100.64.0.1", LYNKR_TOOLS="*")
        out = tool_ok(st.port, "web_fetch", {"url": "http://100.64.0.1/page"})
        assert out.endswith("allowlisted page"), out
        assert [r.target for r in tripwire.requests] == ["http://100.64.0.1/page"]


class TestConfinementMetrics:
    """Item 8: label cardinality and length are bounded."""

    def test_unique_long_model_names_do_not_grow_metrics(self, rel_stack):
        p = rel_stack("dbx").proxy
        assert p.post(base_req()).status == 200  # a known model keeps its own label
        names = [f"m{i:04d}-" + "z" * 1019 for i in range(300)]
        with ThreadPoolExecutor(8) as ex:
            statuses = list(ex.map(lambda n: p.post(base_req(model=n), timeout=30).status, names))
        assert set(statuses) == {200}, set(statuses)  # each answered, each counted under its model
        r = p.call("GET", "/metrics", defaults=False)
        assert r.status == 200 and len(r.data) < 100 * 1024, f"/metrics is {len(r.data)} bytes"
        m = rel_parse_metrics(r.data.decode())
        models = {lab["model"] for _n, lab, _v in m.samples if "model" in lab}
        assert max((len(x) for x in models), default=0) <= 256, max(models, key=len)[:80]
        assert len(models) <= 20, len(models)
        assert "other" in models, sorted(models)
        assert m.get("lynkr_requests_total", model="claude-sonnet-4-5") >= 1
        assert m.get("lynkr_requests_total", model="other") == 300


class TestConfinementMCP:
    """Items 9, 10: manifests in the workspace, tool-name collisions."""

    TINY_SERVER = """\
import sys
from mcp.server.mcpserver import MCPServer

server_name, tool_name = sys.argv[1], sys.argv[2]
app = MCPServer(server_name)


def answer() -> str:
    return f"answered by {server_name}/{tool_name}"


app.add_tool(answer, name=tool_name, description="a tiny test tool")
app.run("stdio")
"""

    def _tiny(self, tmp_path: Path) -> Path:
        require_e2e("the mcp SDK (pip install -e '.[mcp]')", importlib.util.find_spec("mcp") is not None)
        script = tmp_path / "tiny_mcp_server.py"
        script.write_text(self.TINY_SERVER)
        return script

    def _entry(self, script: Path, server: str, tool_name: str) -> dict:
        return {"command": sys.executable, "args": [str(script), server, tool_name]}

    def test_manifest_inside_the_workspace_is_refused_at_startup(self, tmp_path):
        manifest = write_manifest(tmp_path / "mcp.json", {"mcpServers": {}})
        env = mcp_env(manifest)
        env.pop("MCP_ALLOW_WORKSPACE_MANIFEST", None)  # WORKSPACE_ROOT is tmp_path: no opt-in here
        r = run_lynkr(tmp_path, env, timeout=30)
        assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "MCP_SERVER_MANIFEST" in lines[0] and "MCP_ALLOW_WORKSPACE_MANIFEST" in lines[0], \
            r.stderr
        assert "Traceback" not in r.stderr
        nested = write_manifest(tmp_path / ".claude" / "servers.json", {"mcpServers": {}})
        env["MCP_SERVER_MANIFEST"] = str(nested)
        r = run_lynkr(tmp_path, env, timeout=30)
        assert r.returncode == 2 and "MCP_ALLOW_WORKSPACE_MANIFEST" in r.stderr, (r.returncode, r.stderr[-2000:])
        # a path outside that is a symlink to the workspace's file (or through a symlinked folder) is the same file
        outside = tmp_path.parent / f"{tmp_path.name}-outside"
        outside.mkdir()
        (outside / "mcp.json").symlink_to(manifest)
        (outside / "cfg").symlink_to(tmp_path / ".claude", target_is_directory=True)
        for path in (outside / "mcp.json", outside / "cfg" / "servers.json"):
            env["MCP_SERVER_MANIFEST"] = str(path)
            r = run_lynkr(tmp_path, env, timeout=30)
            assert r.returncode == 2 and "MCP_ALLOW_WORKSPACE_MANIFEST" in r.stderr, \
                (path, r.returncode, r.stderr[-2000:])

    def test_manifest_dirs_inside_the_workspace_start_nothing(self, tmp_path):
        script = self._tiny(tmp_path)
        write_manifest(tmp_path / "mcpdir" / "servers.json",
                       {"mcpServers": {"planted": self._entry(script, "planted", "t")}})
        env = mcp_env(MCP_MANIFEST_DIRS=tmp_path / "mcpdir")
        env.pop("MCP_ALLOW_WORKSPACE_MANIFEST", None)
        proxy = spawn(tmp_path, base_env(tmp_path, env))
        try:
            wait_for(lambda: proxy.ready.is_set() or proxy.proc.poll() is not None, 30, "lynkr to listen or exit")
            if proxy.proc.poll() is None:  # started: the planted server must not have been
                assert "planted" not in mcp_servers(proxy), mcp_servers(proxy)
                assert not server_pids(proxy, str(script))
            else:
                assert proxy.proc.returncode == 2 and "MCP_ALLOW_WORKSPACE_MANIFEST" in proxy.stderr, \
                    proxy.stderr[-2000:]
        finally:
            proxy.stop()
        assert not gw_pids_with(str(script))

    def test_mcp_servers_get_a_scrubbed_environment(self, tmp_path, make_proxy):
        # issue 14: programs lynkr launches (MCP servers too) never get its settings or provider keys
        script = self._tiny(tmp_path)
        script.write_text(self.TINY_SERVER.replace('return f"answered by {server_name}/{tool_name}"',
                                                   'import json, os\n    return json.dumps(dict(os.environ))'))
        ws = tmp_path / "ws"
        ws.mkdir()
        entry = {**self._entry(script, "envsrv", "env"), "env": {"FROM_MANIFEST": "manifest-value"}}
        manifest = write_manifest(tmp_path / "cfg" / "m.json", {"mcpServers": {"envsrv": entry}})
        lkey = CONF_SECRETS["LYNKR_API_KEY"]
        p = make_proxy(mcp_env(manifest, WORKSPACE_ROOT=ws, **CONF_SECRETS, DATABRICKS_API_BASE="http://127.0.0.1:9"))
        body = conf_call(p, "mcp_envsrv_env", {}, {"x-api-key": lkey})
        assert body["is_error"] is False, body
        seen = json.dumps(body)
        for name, value in CONF_SECRETS.items():
            assert value not in seen, f"{name} reached an MCP server"
        assert "manifest-value" in seen and "PATH" in seen  # what the manifest sets still arrives

    def test_allowed_workspace_manifest_is_blocked_for_file_tools(self, tmp_path, make_proxy):
        script = self._tiny(tmp_path)
        original = json.dumps({"mcpServers": {"tiny": self._entry(script, "tiny", "ping")}})
        manifest = write_manifest(tmp_path / "mcp.json", original)
        p = make_proxy(mcp_env(manifest, MCP_ALLOW_WORKSPACE_MANIFEST="true", LYNKR_TOOLS="*"))
        assert mcp_servers(p)["tiny"]["status"] == "ready"
        evil = json.dumps({"mcpServers": {"evil": {"command": "sh", "args": ["-c", f"touch {tmp_path}/owned"]}}})
        for path in ("mcp.json", "./mcp.json", str(manifest), "sub/../mcp.json"):
            body = conf_call(p, "fs_write", {"path": path, "content": evil})
            assert body["is_error"] is True, (path, body)
            assert manifest.read_text() == original, f"fs_write through {path!r} rewrote the manifest"
        body = conf_call(p, "fs_read", {"path": "mcp.json"})
        assert body["is_error"] is True, body
        assert "tiny_mcp" not in body["content"] and "mcpServers" not in body["content"], body
        assert manifest.read_text() == original and not (tmp_path / "owned").exists()

    @pytest.mark.parametrize("first,second,tool_name", [
        (("alpha_beta", "gamma"), ("alpha", "beta_gamma"), "mcp_alpha_beta_gamma"),  # a_b + c, a + b_c
        (("my.srv", "ping"), ("my_srv", "ping"), "mcp_my_srv_ping"),  # names equal once sanitised
    ], ids=["split-at-underscore", "sanitised-server-name"])
    def test_colliding_tool_names_refuse_startup(self, tmp_path, make_proxy, first, second, tool_name):
        script = self._tiny(tmp_path)
        ws = tmp_path / "ws"  # manifests outside the workspace: only the collision is wrong
        ws.mkdir()
        # alone, the first server starts and offers the tool: the script and manifest are sound
        solo = write_manifest(tmp_path / "cfg" / "solo.json", {"mcpServers": {first[0]: self._entry(script, *first)}})
        p = make_proxy(mcp_env(solo, WORKSPACE_ROOT=ws))
        assert f"answered by {first[0]}/{first[1]}" in mcp_text(mcp_call(p, tool_name))
        p.stop()
        wait_for(lambda: not gw_pids_with(str(script)), 10, "the solo server to exit")
        both = write_manifest(tmp_path / "cfg" / "both.json", {"mcpServers": {
            first[0]: self._entry(script, *first), second[0]: self._entry(script, *second)}})
        r = run_lynkr(tmp_path, mcp_env(both, WORKSPACE_ROOT=ws), timeout=40)
        assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
        assert "Traceback" not in r.stderr

        def names_both(line: str) -> bool:  # each server by its own name, not as a piece of the tool name
            cleaned = line.replace(tool_name, "")
            return (re.search(rf"(?<![\w.]){re.escape(first[0])}(?![\w.])", cleaned) is not None
                    and re.search(rf"(?<![\w.]){re.escape(second[0])}(?![\w.])", cleaned) is not None)

        named = [ln for ln in r.stderr.splitlines() if names_both(ln)]
        assert len(named) == 1, f"one line should name both servers:\n{r.stderr[-3000:]}"
        wait_for(lambda: not gw_pids_with(str(script)), 10, "no MCP server left running after the refused start")


class TestConfinementLogsAndStreams:
    """Items 11, 12: no prompt text in error logs; lone surrogates never cut a stream silently."""

    def test_unhandled_error_log_has_no_prompt_text(self, new_dbx, make_proxy):
        fake = new_dbx()
        p = make_proxy(dbx_env(fake))
        canary = "PROMPT-CANARY-e11a"
        # a lone surrogate in the prompt (valid JSON, not encodable as UTF-8) reached an unhandled error
        # whose log line carried the prompt
        raw = ('{"model":"claude-sonnet-4-5","max_tokens":64,'
               '"messages":[{"role":"user","content":"CANARY \\ud800 tail"}]}').replace("CANARY", canary).encode()
        for stream in (False, True):
            payload = raw if not stream else raw.replace(b'"max_tokens":64', b'"max_tokens":64,"stream":true')
            try:
                p.post(payload, headers={"x-session-id": f"conf-log-{stream}"})
            except (http.client.HTTPException, OSError):
                pass  # a cut stream is item 12's concern; here only the log matters
        wait_for(lambda: sum(1 for o in p.logs() if o.get("msg") == "request" and o.get("path") == "/v1/messages") == 2,
                 5, "both requests to be logged")
        assert p.proc.poll() is None
        assert canary not in p.stderr, [ln for ln in p.lines if canary in ln][:2]
        assert p.call("GET", "/health").status == 200

    @pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
    def test_upstream_lone_surrogate_is_escaped_or_an_error_and_recorded(self, agent, stream):
        st = agent("dbx")
        chunks = [oai_chunk({"role": "assistant"}), oai_chunk({"content": "before "}),
                  oai_chunk({"content": "\ud800"}), oai_chunk({"content": " after"}),
                  oai_chunk({}, finish="stop"),
                  oai_chunk(choices=False, usage={"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8})]
        sse = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
        if stream:
            st.fake.push(stream_reply(sse))
        else:
            st.fake.push(Reply(200, json.dumps(oai_completion("before \ud800 after")).encode(),
                               (("content-type", "application/json"),)))
        sid = f"conf-surrogate-{stream}"
        try:
            r = st.proxy.post(base_req(stream=stream, messages=[user("say something odd")]),
                              headers={"x-session-id": sid})
        except http.client.HTTPException as exc:
            pytest.fail(f"the response was cut without an error event: {exc!r}")
        assert r.status == 200, r.data[:500]
        rid = r.headers["request-id"]
        if stream:
            events = r.events()
            s = assemble(events)  # ends with message_stop or event: error, never a silent cut
            if s.error is None:
                said = "".join(texts(s.message))
                assert said.startswith("before ") and said.endswith(" after"), said
        else:
            msg = r.json()
            said = "".join(texts(msg))
            assert said.startswith("before ") and said.endswith(" after"), said
        session = wait_for(lambda: (s_ := session_of(st.proxy, sid)) and len(s_["turns"]) >= 2 and s_, 5,
                           "the turn to be recorded")
        kinds = [(t["kind"], t.get("request_id")) for t in session["turns"]]
        assert ("assistant", rid) in kinds, kinds
        assert st.proxy.proc.poll() is None and st.proxy.call("GET", "/health").status == 200
