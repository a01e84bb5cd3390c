from test_lynkr import *  # (draft only: this section is appended to test_lynkr.py without this line)
from test_lynkr import _has_key, _isolated  # noqa: F401  (draft only; _isolated: the autouse fixture in scope)

# (draft only, drop when appended) `import *` also brought test_lynkr's tests in: keep pytest from running them here
for _name in [n for n in list(globals()) if n.startswith(("Test", "test_"))]:
    del globals()[_name]


# == 10. Providers as data: presets, routing, config file ==
#
# One strict fake per preset, each speaking its vendor's real wire format and rejecting (with that
# vendor's error JSON and status) what the real service rejects: wrong path, missing/wrong auth,
# no `model`, unknown top-level fields, `max_tokens` for reasoning models, Gemini-hostile schema
# keywords, DeepSeek's 8192 output cap, leftover Anthropic fields.  Streams are OpenAI chunks (or
# Anthropic SSE) split at awkward byte boundaries.  The proxy runs as a subprocess configured by
# env vars alone (one preset) or by a TOML file (several providers, routes, fallbacks).

OPENAI_KEY = "sk-test-openai-secret-0a1b2c3d4e5f"
AZOAI_KEY = "azure-openai-fake-key-77c2e1"
OPENROUTER_KEY = "sk-or-v1-fake-openrouter-9d8e7f"
GEMINI_KEY = "AIzaFakeGeminiKey-3c4d5e6f7a"
ANTH_KEY = "sk-ant-api03-lynkr-upstream-4b5c6d"
ANTH_ENV_CANARY = "sk-ant-env-canary-must-not-leak-2d"  # ANTHROPIC_API_KEY in lynkr's env: never sent upstream
COMPAT_KEY = "compat-fake-key-1f2e3d"
PV_SECRETS = (CLIENT_KEY, ANTH_ENV_CANARY)
PV_USAGE = {"prompt_tokens": 1200, "completion_tokens": 34, "total_tokens": 1234,
            "prompt_tokens_details": {"cached_tokens": 1000}}
PV_ANTH_USAGE = {"input_tokens": 200, "output_tokens": 34, "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 1000}
# What the OpenAI Chat Completions API accepts at the top level (openai_violations' OAI_TOP_KEYS is the
# Databricks set: no `model`, no `max_completion_tokens`, but `thinking`/`top_k`, which OpenAI rejects).
PV_OAI_KEYS = frozenset({
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "n", "stream",
    "stream_options", "tools", "tool_choice", "parallel_tool_calls", "user", "reasoning_effort", "response_format",
    "seed", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "store",
    "service_tier", "prediction", "modalities", "audio", "web_search_options", "safety_identifier",
    "prompt_cache_key", "verbosity", "metadata"})
PV_ANTHROPIC_ONLY = ("system", "stop_sequences", "thinking", "top_k", "context_management", "output_config",
                     "anthropic_version", "anthropic_beta")
PV_REASONING_MODEL = re.compile(r"^(gpt-5|o1|o3|o4)")
# openai_violations() findings that are Databricks/Claude rules, not OpenAI-family ones
PV_NOT_OPENAI_RULES = ("a system message is only allowed first", "'$schema' is not allowed")
GEMINI_BANNED = ("$schema", "additionalProperties", "propertyNames", "uniqueItems", "deprecated", "multipleOf",
                 "patternProperties")


def pv_split(data: bytes) -> list[bytes]:
    return split_at(data, awkward_points(data))


def pv_oai_reply(rec: Recorded, text_: str | None, tools=(), finish: str = "stop", usage: dict | None = None,
                 reasoning: tuple[str, str] | None = None, prompt_filter: bool = False,
                 no_ids: bool = False) -> Reply:
    """An OpenAI chat answer to rec: chunks split at awkward bytes when it asked to stream (the usage
    chunk only with stream_options.include_usage, as OpenAI does), else one completion JSON.
    reasoning=(field, text) streams reasoning first in delta.<field> (reasoning_content | reasoning);
    prompt_filter: Azure's first chunk (no choices, only prompt_filter_results); no_ids: tool calls without ids."""
    b = rec.body
    model = b.get("model") or "deployment-model"
    usage = usage or PV_USAGE
    if b.get("stream"):
        chunks = oai_stream(text_, tools=tools, finish=finish, usage=usage)
        if reasoning:
            field, words = reasoning
            chunks[1:1] = [oai_chunk({field: words[i : i + 7]}) for i in range(0, len(words), 7)]
        if dig(b, "stream_options.include_usage") is not True:
            chunks = [c for c in chunks if c["choices"]]  # no usage chunk unless asked for
        if prompt_filter:
            chunks.insert(0, {"id": "", "object": "", "created": 0, "model": "", "choices": [],
                              "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {
                                  "hate": {"filtered": False, "severity": "safe"}}}]})
        include_usage = dig(b, "stream_options.include_usage") is True
        for c in chunks:
            c["model"] = model if c["object"] else ""
            if c["object"]:  # as api.openai.com streams them
                c["system_fingerprint"] = "fp_pv0123"
                if include_usage:
                    c.setdefault("usage", None)
            if c["choices"] and c["choices"][0]["delta"].get("role") == "assistant":
                c["choices"][0]["delta"].update(content="", refusal=None)
            for tc in (c["choices"][0]["delta"].get("tool_calls") or []) if no_ids and c["choices"] else []:
                tc.pop("id", None)
        data = oai_sse(chunks)
        return stream_reply(data, pieces=pv_split(data), gap=0.001)
    extra = {reasoning[0]: reasoning[1]} if reasoning else {}
    c = oai_completion(text_, tool_calls=tools, finish=finish, usage=usage, **extra)
    c["model"] = model
    for tc in dig(c, "choices.0.message.tool_calls") if no_ids and tools else []:
        tc.pop("id", None)
    return json_reply(c)


def pv_anth_reply(rec: Recorded, content: list[dict], stop_reason: str = "end_turn") -> Reply:
    b = rec.body
    msg = anth_message(content, model=b["model"], stop_reason=stop_reason, usage=dict(PV_ANTH_USAGE),
                       id="msg_01PVUPSTREAM")
    if b.get("stream"):
        data = anth_sse(anth_events(msg))
        return stream_reply(data, pieces=pv_split(data), gap=0.001)
    return json_reply(msg)


class FakeOpenAIFamily(FakeHTTP):
    """Base of the OpenAI-chat fakes: POST {chat_path}, strict body checks, vendor error JSON."""

    label = "openai"
    key: str | None = None
    chat_path = "/v1/chat/completions"
    top_keys: frozenset | None = PV_OAI_KEYS  # None: unknown top-level keys are ignored (lenient vendor)
    keeps_cache_control = False
    reasoning_models = True  # gpt-5*/o-series reject max_tokens/temperature/top_p
    max_tokens_caps: tuple[tuple[str, int], ...] = ()  # (model prefix, most output tokens)

    @property
    def hello(self) -> str:
        return f"Hello from fake {self.label} ✓"

    # vendor-specific pieces
    def error(self, status: int, message: str, etype: str = "invalid_request_error", code: Any = None) -> Reply:
        return json_reply({"error": {"message": message, "type": etype, "param": None, "code": code}}, status)

    def path_ok(self, rec: Recorded) -> bool:
        return rec.path == self.chat_path

    def not_found(self, rec: Recorded) -> Reply:
        return self.error(404, f"Invalid URL ({rec.method} {rec.path})")

    def auth_problem(self, rec: Recorded) -> Reply | None:
        got = rec.headers.get("authorization")
        if got is None:
            return self.error(401, "You didn't provide an API key. You need to provide your API key in an "
                                   "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
        if got != f"Bearer {self.key}":
            return self.error(401, "Incorrect API key provided.", code="invalid_api_key")
        return None

    def model_problem(self, model: Any) -> Reply | None:
        if not isinstance(model, str) or not model:
            return self.error(400, "you must provide a model parameter")
        return None

    def problems(self, b: dict) -> list[str]:
        p: list[str] = []
        if self.top_keys is not None:
            p += [f"Unrecognized request argument supplied: {k}" for k in b if k not in self.top_keys]
        core = {k: v for k, v in b.items() if k in OAI_TOP_KEYS and (self.top_keys is None or k in self.top_keys)}
        p += [x for x in openai_violations(core) if not any(s in x for s in PV_NOT_OPENAI_RULES)]
        if not self.keeps_cache_control and (_has_key(b.get("messages"), "cache_control")
                                             or _has_key(b.get("tools"), "cache_control")):
            p.append("Unrecognized parameter 'cache_control' in a message content part or tool")
        model = str(b.get("model") or "")
        mct = b.get("max_completion_tokens")
        if "max_completion_tokens" in b and (not isinstance(mct, int) or isinstance(mct, bool) or mct < 1):
            p.append("max_completion_tokens: must be a positive integer")
        if "max_tokens" in b and "max_completion_tokens" in b:
            p.append("max_tokens and max_completion_tokens cannot both be set")
        if self.reasoning_models and PV_REASONING_MODEL.match(model):
            if "max_tokens" in b:
                p.append("Unsupported parameter: 'max_tokens' is not supported with this model. "
                         "Use 'max_completion_tokens' instead.")
            p += [f"Unsupported parameter: '{k}' is not supported with this model." for k in ("temperature", "top_p")
                  if k in b]
        for prefix, cap in self.max_tokens_caps:
            mt = b.get("max_tokens", b.get("max_completion_tokens"))
            if model.startswith(prefix) and isinstance(mt, int) and mt > cap:
                p.append(f"Invalid max_tokens value, the valid range of max_tokens is [1, {cap}]")
        if "stream_options" in b and not b.get("stream"):
            p.append("The 'stream_options' parameter is only allowed when 'stream' is enabled.")
        stop = b.get("stop")
        if isinstance(stop, list) and len(stop) > 4:
            p.append("stop: at most 4 sequences")
        return p

    def check(self, rec: Recorded) -> Reply | None:
        if rec.method != "POST" or not self.path_ok(rec):
            return self.not_found(rec)
        bad = self.auth_problem(rec)
        if bad is not None:
            return bad
        b = rec.body
        if not isinstance(b, dict):
            return self.error(400, "We could not parse the JSON body of your request.")
        bad = self.model_problem(b.get("model"))
        if bad is not None:
            return bad
        p = self.problems(b)
        return self.error(400, "; ".join(p)) if p else None

    def default(self, rec: Recorded) -> Reply:
        return pv_oai_reply(rec, self.hello)


class FakeOpenAI(FakeOpenAIFamily):
    """api.openai.com: POST /v1/chat/completions, Bearer."""

    label = "openai"
    key = OPENAI_KEY


class FakeAzureOpenAI(FakeOpenAIFamily):
    """Azure OpenAI: /openai/deployments/{dep}/chat/completions?api-version=... (dated API) or
    /openai/v1/chat/completions (v1 API, model = deployment); `api-key` header (v1 also takes Bearer)."""

    label = "azure-openai"
    key = AZOAI_KEY
    deployments = ("gpt-4o-prod", "gpt-5-prod")
    API_VERSIONS = ("2024-06-01", "2024-10-21", "2025-01-01-preview", "2025-04-01-preview")
    top_keys = PV_OAI_KEYS | {"data_sources", "user_security_context"}
    reasoning_models = False  # Azure decides by the deployed model, not by the deployment's name

    def error(self, status: int, message: str, etype: str = "invalid_request_error", code: Any = None) -> Reply:
        return json_reply({"error": {"code": code or str(status), "message": message}}, status)

    def dated(self, rec: Recorded) -> str | None:
        m = re.fullmatch(r"/openai/deployments/([^/]+)/chat/completions", rec.path)
        return m.group(1) if m else None

    def path_ok(self, rec: Recorded) -> bool:
        return self.dated(rec) is not None or rec.path == "/openai/v1/chat/completions"

    def not_found(self, rec: Recorded) -> Reply:
        return self.error(404, "Resource not found")

    def auth_problem(self, rec: Recorded) -> Reply | None:
        ok = rec.headers.get("api-key") == self.key or (
            rec.path.startswith("/openai/v1/") and rec.headers.get("authorization") == f"Bearer {self.key}")
        if not ok:
            return self.error(401, "Access denied due to invalid subscription key or wrong API endpoint. Make sure "
                                   "to provide a valid key for an active subscription and use a correct regional "
                                   "API endpoint for your resource.")
        return None

    def check(self, rec: Recorded) -> Reply | None:
        if rec.method == "POST" and self.path_ok(rec):
            version = urllib.parse.parse_qs(rec.query).get("api-version", [None])[0]
            if self.dated(rec) is not None:
                if version is None:
                    return self.error(404, "Resource not found")
                if version not in self.API_VERSIONS:
                    return self.error(400, "API version not supported", code="BadRequest")
                if self.dated(rec) not in self.deployments:
                    return self.error(404, "The API deployment for this resource does not exist. If you created "
                                           "the deployment within the last 5 minutes, please wait a moment and "
                                           "try again.", code="DeploymentNotFound")
            elif version not in (None, "preview", "latest"):
                return self.error(400, f"api-version {version!r} is not supported by the v1 API", code="BadRequest")
        return super().check(rec)

    def model_problem(self, model: Any) -> Reply | None:
        return None  # checked per surface in problems()

    def problems(self, b: dict) -> list[str]:
        p = super().problems(b)
        if "model" in b and b["model"] not in self.deployments:
            p.append(f"The model `{b['model']}` does not exist or you do not have access to it.")
        return p

    def default(self, rec: Recorded) -> Reply:
        if rec.path == "/openai/v1/chat/completions" and rec.body.get("model") not in self.deployments:
            return self.error(404, "The API deployment for this resource does not exist.", code="DeploymentNotFound")
        return pv_oai_reply(rec, self.hello, prompt_filter=True)


class FakeOpenRouter(FakeOpenAIFamily):
    """openrouter.ai: POST /api/v1/chat/completions, Bearer, vendor-prefixed model; keeps cache_control on
    content parts; ignores unknown top-level fields (it forwards extras to the model vendor)."""

    label = "openrouter"
    key = OPENROUTER_KEY
    chat_path = "/api/v1/chat/completions"
    top_keys = None
    keeps_cache_control = True
    reasoning_models = False

    def error(self, status: int, message: str, etype: str = "invalid_request_error", code: Any = None) -> Reply:
        return json_reply({"error": {"message": message, "code": status}}, status)

    def auth_problem(self, rec: Recorded) -> Reply | None:
        if rec.headers.get("authorization") != f"Bearer {self.key}":
            return self.error(401, "No auth credentials found")
        return None

    def model_problem(self, model: Any) -> Reply | None:
        if not isinstance(model, str) or "/" not in model:
            return self.error(400, f"{model!r} is not a valid model ID")
        return None


class FakeOllama(FakeOpenAIFamily):
    """Ollama's OpenAI compatibility: POST /v1/chat/completions, no auth, only pulled models."""

    label = "ollama"
    top_keys = None
    reasoning_models = False
    pulled = ("qwen2.5-coder:7b", "llama3.2", "codellama:13b")

    def not_found(self, rec: Recorded) -> Reply:
        return Reply(404, b"404 page not found", (("content-type", "text/plain"),))

    def auth_problem(self, rec: Recorded) -> Reply | None:
        return None

    def model_problem(self, model: Any) -> Reply | None:
        if not isinstance(model, str) or not model:
            return self.error(400, "model is required")
        if model not in self.pulled:
            return self.error(404, f"model '{model}' not found", etype="api_error")
        return None


def gemini_schema_problems(node: Any, where: str = "parameters") -> list[str]:
    """What Gemini rejects in a function schema, anywhere nested (property NAMES are not keywords)."""
    if not isinstance(node, dict):
        return []
    p = [f"{where}: Unknown name \"{k}\"" for k in GEMINI_BANNED if k in node]
    fmt = node.get("format")
    if fmt is not None and fmt not in ("enum", "date-time"):
        p.append(f"{where}.format: Unsupported format {fmt!r} (only 'enum' and 'date-time')")
    for k in ("properties", "$defs", "definitions"):
        if isinstance(node.get(k), dict):
            for name, sub in node[k].items():
                p += gemini_schema_problems(sub, f"{where}.{k}.{name}")
    for k in ("items", "not", "additionalProperties", "propertyNames", "contains", "if", "then", "else"):
        if isinstance(node.get(k), dict):
            p += gemini_schema_problems(node[k], f"{where}.{k}")
    for k in ("anyOf", "oneOf", "allOf", "prefixItems", "items"):
        if isinstance(node.get(k), list):
            for i, sub in enumerate(node[k]):
                p += gemini_schema_problems(sub, f"{where}.{k}[{i}]")
    return p


class FakeGemini(FakeOpenAIFamily):
    """Gemini's OpenAI compatibility: POST /v1beta/openai/chat/completions, Bearer, gemini-* models,
    strict about JSON-schema keywords in tools; errors as a JSON list of Google status objects."""

    label = "gemini"
    key = GEMINI_KEY
    chat_path = "/v1beta/openai/chat/completions"
    top_keys = PV_OAI_KEYS | {"extra_body"}
    reasoning_models = False

    def error(self, status: int, message: str, etype: str = "invalid_request_error", code: Any = None) -> Reply:
        st_ = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
               500: "INTERNAL", 503: "UNAVAILABLE"}.get(status, "UNKNOWN")
        return json_reply([{"error": {"code": status, "message": message, "status": st_}}], status)

    def auth_problem(self, rec: Recorded) -> Reply | None:
        if rec.headers.get("authorization") != f"Bearer {self.key}":
            return self.error(400, "API key not valid. Please pass a valid API key.")
        return None

    def model_problem(self, model: Any) -> Reply | None:
        if not isinstance(model, str) or not re.fullmatch(r"(models/)?gemini-[\w.\-]+", model):
            return self.error(404, f"models/{model} is not found for API version v1main, or is not supported "
                                   f"for generateContent.")
        return None

    def problems(self, b: dict) -> list[str]:
        p = super().problems(b)
        for j, t in enumerate(b.get("tools") or []):
            p += gemini_schema_problems(dig(t, "function.parameters"), f"tools[{j}].function.parameters")
        return p


class FakeOpenAICompatible(FakeOpenAIFamily):
    """A generic OpenAI-compatible server (DeepSeek-like): POST /v1/chat/completions, Bearer; deepseek*
    models take at most 8192 output tokens."""

    label = "openai-compatible"
    key = COMPAT_KEY
    top_keys = None
    reasoning_models = False
    max_tokens_caps = (("deepseek", 8192),)


class FakeAnthropic(FakeHTTP):
    """api.anthropic.com: POST /v1/messages[/count_tokens], x-api-key and anthropic-version required."""

    label = "anthropic"
    key = ANTH_KEY
    PATHS = ("/v1/messages", "/v1/messages/count_tokens")

    @property
    def hello(self) -> str:
        return "Hello from fake anthropic ✓"

    def error(self, status: int, message: str, etype: str | None = None) -> Reply:
        return json_reply(anth_error(status, etype or rel_etype(status), message), status)

    def check(self, rec: Recorded) -> Reply | None:
        if rec.path not in self.PATHS or rec.method != "POST":
            return self.error(404, "Not found", "not_found_error")
        if rec.headers.get("x-api-key") != self.key:
            return self.error(401, "invalid x-api-key", "authentication_error")
        if not rec.headers.get("anthropic-version"):
            return self.error(400, "anthropic-version: header is required", "invalid_request_error")
        b = rec.body
        if not isinstance(b, dict):
            return self.error(400, "body: Input should be an object", "invalid_request_error")
        problems = anthropic_violations(b, count=rec.path.endswith("count_tokens"))
        betas = rec.headers.get("anthropic-beta", "")
        if "context_management" in b and "context-management-" not in betas:
            problems.append("context_management: Extra inputs are not permitted (requires the context-management beta)")
        if dig(b, "output_config.effort") is not MISSING and "effort-" not in betas:
            problems.append("output_config.effort: Extra inputs are not permitted (requires the effort beta)")
        return self.error(400, "; ".join(problems), "invalid_request_error") if problems else None

    def default(self, rec: Recorded) -> Reply:
        if rec.path.endswith("count_tokens"):
            return json_reply({"input_tokens": 321})
        return pv_anth_reply(rec, [text(self.hello)])


# -- presets configured by env vars alone --


@dataclasses.dataclass
class PresetCase:
    provider: str  # the provider's name (= the preset)
    fake: type
    env: Callable[[Any], dict]
    path: str
    query: dict[str, str]
    model: str | None  # upstream model for a Claude model name; None: the client's model name
    auth: tuple[str, str] | None
    wire: str = "openai"


PV_CASES = {
    "openai": PresetCase("openai", FakeOpenAI, lambda f: {
        "MODEL_PROVIDER": "openai", "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": f"{f.url}/v1"},
        "/v1/chat/completions", {}, "gpt-5", ("authorization", f"Bearer {OPENAI_KEY}")),
    "azure-openai": PresetCase("azure-openai", FakeAzureOpenAI, lambda f: {
        "MODEL_PROVIDER": "azure-openai", "AZURE_OPENAI_ENDPOINT": f.url, "AZURE_OPENAI_API_KEY": AZOAI_KEY,
        "AZURE_OPENAI_DEPLOYMENT": "gpt-4o-prod"},
        "/openai/deployments/gpt-4o-prod/chat/completions", {"api-version": "2024-10-21"}, "gpt-4o-prod",
        ("api-key", AZOAI_KEY)),
    "azure-openai-v1": PresetCase("azure-openai", FakeAzureOpenAI, lambda f: {
        "MODEL_PROVIDER": "azure-openai", "AZURE_OPENAI_ENDPOINT": f.url, "AZURE_OPENAI_API_KEY": AZOAI_KEY,
        "AZURE_OPENAI_DEPLOYMENT": "gpt-4o-prod", "AZURE_OPENAI_API_VERSION": "v1"},
        "/openai/v1/chat/completions", {}, "gpt-4o-prod", None),
    "openrouter": PresetCase("openrouter", FakeOpenRouter, lambda f: {
        "MODEL_PROVIDER": "openrouter", "OPENROUTER_API_KEY": OPENROUTER_KEY, "OPENROUTER_BASE_URL": f"{f.url}/api/v1"},
        "/api/v1/chat/completions", {}, "anthropic/claude-sonnet-4.5", ("authorization", f"Bearer {OPENROUTER_KEY}")),
    "ollama": PresetCase("ollama", FakeOllama, lambda f: {"MODEL_PROVIDER": "ollama", "OLLAMA_BASE_URL": f.url},
                         "/v1/chat/completions", {}, "qwen2.5-coder:7b", None),
    "gemini": PresetCase("gemini", FakeGemini, lambda f: {
        "MODEL_PROVIDER": "gemini", "GEMINI_API_KEY": GEMINI_KEY, "GEMINI_BASE_URL": f"{f.url}/v1beta/openai"},
        "/v1beta/openai/chat/completions", {}, "gemini-2.5-pro", ("authorization", f"Bearer {GEMINI_KEY}")),
    "openai-compatible": PresetCase("openai-compatible", FakeOpenAICompatible, lambda f: {
        "MODEL_PROVIDER": "openai-compatible", "OPENAI_COMPATIBLE_BASE_URL": f"{f.url}/v1",
        "OPENAI_COMPATIBLE_API_KEY": COMPAT_KEY},
        "/v1/chat/completions", {}, None, ("authorization", f"Bearer {COMPAT_KEY}")),
    "anthropic": PresetCase("anthropic", FakeAnthropic, lambda f: {
        "MODEL_PROVIDER": "anthropic", "LYNKR_ANTHROPIC_API_KEY": ANTH_KEY, "LYNKR_ANTHROPIC_BASE_URL": f.url,
        "ANTHROPIC_API_KEY": ANTH_ENV_CANARY},
        "/v1/messages", {}, None, ("x-api-key", ANTH_KEY), wire="anthropic"),
}


@pytest.fixture(scope="module")
def pv_stacks(tmp_path_factory):
    """pv_stacks(case) -> Stack(fake, proxy) for a PV_CASES entry, started once per module, fake reset."""
    made: dict[str, Stack] = {}

    def get(case: str) -> Stack:
        if case not in made:
            c = PV_CASES[case]
            fake = c.fake()
            try:
                proxy = start_proxy(tmp_path_factory.mktemp(f"pv-{case}"), c.env(fake))
            except BaseException:
                fake.close()
                raise
            made[case] = Stack(fake, proxy)
        made[case].fake.reset()
        return made[case]

    yield get
    for s in made.values():
        s.proxy.stop()
        s.fake.close()


def pv_diag(r: Resp, *fakes: FakeHTTP, proxy: Proxy | None = None) -> str:
    out = [f"status {r.status} headers {r.headers}\nbody {r.data[:1500]!r}"]
    for f in fakes:
        out.append(f"{type(f).__name__} saw {[(q.method, q.target) for q in f.requests]}")
    if proxy is not None:
        out.append(f"proxy stderr tail:\n{proxy.stderr[-2000:]}")
    return "\n".join(out)


def pv_no_leak(*fakes: FakeHTTP) -> None:
    for f in fakes:
        for q in f.requests:
            blob = json.dumps(q.headers) + q.raw.decode("utf-8", "replace") + q.target
            for secret in PV_SECRETS:
                assert secret not in blob, f"{type(f).__name__} received {secret!r} in {q.target} {q.headers}"


def pv_headers(r: Resp, provider: str, model: str, route: str) -> None:
    got = {k: r.headers.get(k) for k in ("x-lynkr-provider", "x-lynkr-model", "x-lynkr-route")}
    assert got == {"x-lynkr-provider": provider, "x-lynkr-model": model, "x-lynkr-route": route}, got


def pv_answer(r: Resp, stream: bool) -> dict:
    assert r.status == 200, (r.status, r.headers, r.data[:1500])
    if stream:
        return r.stream().ok()
    m = r.json()
    assert m.get("type") == "message" and m.get("role") == "assistant" and str(m.get("id", "")).startswith("msg_"), m
    assert m.get("stop_reason") in ("end_turn", "tool_use", "max_tokens", "stop_sequence"), m
    return m


def pv_text(msg: dict) -> str:
    return "".join(t for t in texts(msg) if t)


def pv_check_openai_body(b: dict, model: str, stream: bool) -> None:
    assert b.get("model") == model, b.get("model")
    assert not set(PV_ANTHROPIC_ONLY) & set(b), f"Anthropic-only fields forwarded: {set(PV_ANTHROPIC_ONLY) & set(b)}"
    if stream:
        assert b.get("stream") is True and dig(b, "stream_options.include_usage") is True, \
            {k: b.get(k) for k in ("stream", "stream_options")}
    else:
        assert not b.get("stream"), b.get("stream")
    assert b["messages"][0]["role"] in ("system", "developer", "user"), b["messages"][0]
    names = [dig(t, "function.name") for t in b.get("tools") or []]
    assert "Bash" in names, names


def pv_tool_turn(wire: str, calls: list[tuple[str, str, dict]], words: str = "Let me look.") -> Callable:
    def respond(rec: Recorded) -> Reply:
        if wire == "anthropic":
            return pv_anth_reply(rec, [text(words)] + [tool_use(i, n, a) for i, n, a in calls], "tool_use")
        return pv_oai_reply(rec, words, tools=calls, finish="tool_calls")

    return respond


def pv_text_turn(wire: str, words: str) -> Callable:
    def respond(rec: Recorded) -> Reply:
        return pv_anth_reply(rec, [text(words)]) if wire == "anthropic" else pv_oai_reply(rec, words)

    return respond


class TestPresets:
    """Each preset from env vars alone: URL, auth, model, body shape, answer, headers, usage, tools."""

    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    @pytest.mark.parametrize("case", list(PV_CASES))
    def test_claude_code_turn(self, pv_stacks, case, stream):
        c = PV_CASES[case]
        st_ = pv_stacks(case)
        body = cc_body(stream=stream)
        r = st_.proxy.post(body, path="/v1/messages?beta=true", headers=CC_HEADERS)
        assert r.status == 200, pv_diag(r, st_.fake, proxy=st_.proxy)
        msg = pv_answer(r, stream)
        assert pv_text(msg) == st_.fake.hello and msg["stop_reason"] == "end_turn", msg
        assert len(st_.fake.requests) == 1
        rec = st_.fake.last
        assert rec.path == c.path, rec.target
        q = urllib.parse.parse_qs(rec.query)
        for k, v in c.query.items():
            assert q.get(k) == [v], rec.target
        if c.auth:
            assert rec.headers.get(c.auth[0]) == c.auth[1], rec.headers
        model = c.model or body["model"]
        if c.wire == "openai":
            pv_check_openai_body(rec.body, model, stream)
            if case == "openrouter":  # cache_control is kept for OpenRouter (and only there, among these)
                assert _has_key(rec.body["messages"], "cache_control"), rec.body["messages"]
            assert msg["usage"]["input_tokens"] == 200 and msg["usage"]["output_tokens"] == 34, msg["usage"]
            assert msg["usage"].get("cache_read_input_tokens") == 1000, msg["usage"]
        else:
            assert rec.body["model"] == model and rec.headers.get("anthropic-version")
            assert dig(msg, "usage.output_tokens") == 34 and dig(msg, "usage.cache_read_input_tokens") == 1000
        pv_no_leak(st_.fake)
        pv_headers(r, c.provider, model, "default")

    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    @pytest.mark.parametrize("case", list(PV_CASES))
    def test_tool_call_round_trip(self, pv_stacks, case, stream):
        c = PV_CASES[case]
        st_ = pv_stacks(case)
        args = {"command": "ls -la /work/project", "description": "List files ✓"}
        st_.fake.push(pv_tool_turn(c.wire, [("call_pv_1" if c.wire == "openai" else "toolu_pv_1", "Bash", args)]),
                      pv_text_turn(c.wire, "Two files: a.txt and b.txt ✓"))
        body = cc_body(stream=stream)
        r = st_.proxy.post(body, path="/v1/messages?beta=true", headers=CC_HEADERS)
        assert r.status == 200, pv_diag(r, st_.fake, proxy=st_.proxy)
        first = pv_answer(r, stream)
        assert first["stop_reason"] == "tool_use", first
        summary = block_summary(first["content"])
        assert [s[0] for s in summary] == ["text", "tool_use"] and summary[0][1] == "Let me look.", summary
        call_ = first["content"][1]
        assert call_["name"] == "Bash" and call_["input"] == args and TOOL_ID.match(call_["id"]), call_
        if stream:
            kinds = [d["delta"]["type"] for e, d in r.events() if e == "content_block_delta" and d["index"] == 1]
            assert kinds and set(kinds) == {"input_json_delta"}, kinds
        body2 = cc_body(stream=stream, messages=[
            *body["messages"],
            assistant(first["content"]),
            user([tool_result(call_["id"], "a.txt\nb.txt"), text("thanks")]),
        ])
        r2 = st_.proxy.post(body2, path="/v1/messages?beta=true", headers=CC_HEADERS)
        assert r2.status == 200, pv_diag(r2, st_.fake, proxy=st_.proxy)
        second = pv_answer(r2, stream)
        assert pv_text(second) == "Two files: a.txt and b.txt ✓" and second["stop_reason"] == "end_turn", second
        assert len(st_.fake.requests) == 2
        sent = st_.fake.last.body["messages"]
        if c.wire == "openai":
            asst = [m for m in sent if m["role"] == "assistant" and m.get("tool_calls")]
            assert len(asst) == 1 and len(asst[0]["tool_calls"]) == 1, sent
            tc = asst[0]["tool_calls"][0]
            assert tc["function"]["name"] == "Bash" and json.loads(tc["function"]["arguments"]) == args, tc
            tools_msgs = [m for m in sent if m["role"] == "tool"]
            assert [m["tool_call_id"] for m in tools_msgs] == [tc["id"]], sent
            assert "a.txt\nb.txt" in tools_msgs[0]["content"]
        else:
            blocks = [b for m in sent for b in (m["content"] if isinstance(m["content"], list) else [])]
            assert any(b.get("type") == "tool_use" and b.get("input") == args for b in blocks), sent
            assert any(b.get("type") == "tool_result" and b.get("tool_use_id") == call_["id"] for b in blocks), sent
        pv_no_leak(st_.fake)

    def test_minimal_request_gets_route_headers(self, pv_stacks):
        st_ = pv_stacks("ollama")
        r = st_.proxy.post(base_req(model="claude-sonnet-4-5"))
        assert pv_text(pv_answer(r, False)) == st_.fake.hello
        pv_headers(r, "ollama", "qwen2.5-coder:7b", "default")

    def test_anthropic_preset_count_tokens(self, pv_stacks):
        st_ = pv_stacks("anthropic")
        r = st_.proxy.post({"model": "claude-sonnet-4-5", "messages": [user("hello there")]},
                           path="/v1/messages/count_tokens")
        assert r.status == 200 and r.json() == {"input_tokens": 321}, pv_diag(r, st_.fake)
        assert st_.fake.last.path == "/v1/messages/count_tokens"
        assert st_.fake.last.headers.get("x-api-key") == ANTH_KEY
        pv_no_leak(st_.fake)

    def test_anthropic_key_is_lynkr_anthropic_api_key(self, pv_stacks):
        """ANTHROPIC_API_KEY is in the proxy's env (PV_CASES["anthropic"]): the fake sees only the LYNKR_ key."""
        st_ = pv_stacks("anthropic")
        for stream in (False, True):
            r = st_.proxy.post(base_req(stream=stream))
            assert pv_text(pv_answer(r, stream)) == st_.fake.hello
        assert [q.headers.get("x-api-key") for q in st_.fake.requests] == [ANTH_KEY, ANTH_KEY]
        assert all(q.headers.get("authorization") in (None, f"Bearer {ANTH_KEY}") for q in st_.fake.requests)
        pv_no_leak(st_.fake)

    def test_anthropic_api_key_alone_is_not_used(self, tmp_path, make_proxy):
        fake = FakeAnthropic()
        try:
            p = make_proxy({"MODEL_PROVIDER": "anthropic", "LYNKR_ANTHROPIC_BASE_URL": fake.url,
                            "ANTHROPIC_API_KEY": ANTH_ENV_CANARY})
            r = p.post(base_req())
            assert r.status == 503 and r.etype == "api_error", r.data
            assert "LYNKR_ANTHROPIC_API_KEY" in r.emsg, r.emsg
            assert fake.requests == []
        finally:
            fake.close()

    @pytest.mark.parametrize("preset,var", [
        ("openai", "OPENAI_API_KEY"), ("gemini", "GEMINI_API_KEY"), ("openrouter", "OPENROUTER_API_KEY"),
        ("azure-openai", "AZURE_OPENAI_API_KEY"), ("anthropic", "LYNKR_ANTHROPIC_API_KEY")])
    def test_selected_preset_without_key_starts_and_answers_503(self, make_proxy, preset, var):
        p = make_proxy({"MODEL_PROVIDER": preset})
        for stream in (False, True):
            r = p.post(base_req(stream=stream))
            assert r.status == 503 and r.etype == "api_error", (r.status, r.data)
            assert var in r.emsg, r.emsg
        assert p.call("GET", "/health").status == 200


PV_CC_FETCH = {"name": "WebFetch", "description": "Fetch a URL", "input_schema": {
    "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "additionalProperties": False,
    "properties": {
        "url": {"type": "string", "format": "uri", "description": "The URL to fetch"},
        "when": {"type": "string", "format": "date-time"},
        "mode": {"type": "string", "enum": ["fast", "full"], "format": "enum"},
        "tags": {"type": "array", "items": {"type": "string", "format": "email"}, "uniqueItems": True},
        "opts": {"type": "object", "propertyNames": {"pattern": "^[a-z]+$"},
                 "patternProperties": {"^x-": {"type": "string"}},
                 "additionalProperties": {"type": "number", "multipleOf": 0.5}},
        "old": {"type": "string", "deprecated": True},
        "nested": {"anyOf": [{"type": "object", "additionalProperties": False,
                              "properties": {"u": {"type": "string", "format": "uri-reference"}}},
                             {"type": "null"}]},
    },
    "required": ["url"]}}


class TestPresetQuirks:
    def test_gemini_tool_schemas_cleaned(self, pv_stacks):
        st_ = pv_stacks("gemini")
        body = cc_body(stream=False)
        body["tools"].append(PV_CC_FETCH)
        r = st_.proxy.post(body, path="/v1/messages?beta=true", headers=CC_HEADERS)
        assert r.status == 200, pv_diag(r, st_.fake, proxy=st_.proxy)
        tools = {dig(t, "function.name"): dig(t, "function.parameters") for t in st_.fake.last.body["tools"]}
        bash, fetch = tools["Bash"], tools["WebFetch"]
        assert gemini_schema_problems(bash) == [] and gemini_schema_problems(fetch) == []
        assert set(bash["properties"]) == {"command", "timeout"} and bash["required"] == ["command"], bash
        assert {"url", "when", "mode", "tags", "opts", "old", "nested"} <= set(fetch["properties"]), fetch
        assert fetch["required"] == ["url"], fetch
        assert fetch["properties"]["when"].get("format") == "date-time", fetch  # allowed formats survive
        assert fetch["properties"]["mode"]["enum"] == ["fast", "full"], fetch
        assert fetch["properties"]["url"]["type"] == "string" and fetch["properties"]["tags"]["items"]["type"] == "string"

    def test_gemini_keeps_a_property_named_format(self, pv_stacks):
        """`format` is a keyword only where a schema is: a tool parameter called "format" stays."""
        st_ = pv_stacks("gemini")
        tool = {"name": "Render", "description": "Render a doc", "input_schema": {
            "type": "object", "properties": {"format": {"type": "string", "enum": ["md", "html"]},
                                             "deprecated": {"type": "boolean"}},
            "required": ["format"], "additionalProperties": False}}
        r = st_.proxy.post(base_req(tools=[tool]))
        assert r.status == 200, pv_diag(r, st_.fake)
        params = dig(st_.fake.last.body, "tools.0.function.parameters")
        assert set(params["properties"]) == {"format", "deprecated"} and params["required"] == ["format"], params

    @pytest.mark.parametrize("model,reasoning,route", [
        ("claude-sonnet-4-5", True, "default"),  # the openai preset's default upstream model is gpt-5
        ("openai,gpt-5-mini", True, "explicit"),
        ("openai,o3-mini", True, "explicit"),
        ("openai,o4-mini", True, "explicit"),
        ("openai,o1", True, "explicit"),
        ("openai,gpt-4.1", False, "explicit"),
        ("openai,gpt-4o", False, "explicit"),
    ])
    def test_openai_token_limit_field_per_model(self, pv_stacks, model, reasoning, route):
        st_ = pv_stacks("openai")
        r = st_.proxy.post(base_req(model=model, max_tokens=4096, temperature=0.5, top_p=0.9))
        assert r.status == 200, pv_diag(r, st_.fake)
        b = st_.fake.last.body
        upstream = "gpt-5" if "," not in model else model.split(",", 1)[1]
        assert b["model"] == upstream
        if reasoning:
            assert b.get("max_completion_tokens") == 4096 and "max_tokens" not in b, b
            assert "temperature" not in b and "top_p" not in b, b
        else:
            assert b.get("max_tokens") == 4096 and "max_completion_tokens" not in b, b
            assert b.get("temperature") == 0.5, b
        pv_headers(r, "openai", upstream, route)

    @pytest.mark.parametrize("model,asked,sent", [("deepseek-chat", 32000, 8192), ("deepseek-reasoner", 64000, 8192),
                                                  ("deepseek-chat", 1000, 1000), ("qwen3-coder", 32000, 32000)])
    def test_deepseek_max_tokens_capped(self, pv_stacks, model, asked, sent):
        st_ = pv_stacks("openai-compatible")
        for stream in (False, True):
            r = st_.proxy.post(base_req(model=model, max_tokens=asked, stream=stream))
            assert pv_text(pv_answer(r, stream)) == st_.fake.hello, pv_diag(r, st_.fake)
            b = st_.fake.last.body
            assert b["model"] == model and b.get("max_tokens") == sent, b

    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    @pytest.mark.parametrize("case,field", [("openrouter", "reasoning"), ("openai-compatible", "reasoning_content")])
    def test_reasoning_becomes_thinking(self, pv_stacks, case, field, stream):
        st_ = pv_stacks(case)
        thought = "The user wants a greeting; keep it short ✓."
        st_.fake.push(lambda rec: pv_oai_reply(rec, "Hi there!", reasoning=(field, thought)))
        msg = pv_answer(st_.proxy.post(base_req(stream=stream)), stream)
        assert block_summary(msg["content"]) == [("thinking", thought, ""), ("text", "Hi there!")], msg["content"]

    @pytest.mark.parametrize("status,etype", [(400, "invalid_request_error"), (429, "rate_limit_error"),
                                              (500, "api_error")])
    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    @pytest.mark.parametrize("case", [c for c in PV_CASES if PV_CASES[c].wire == "openai"])
    def test_vendor_error_becomes_anthropic_error(self, pv_stacks, case, status, etype, stream):
        """An error before the first byte is an HTTP error with Anthropic error JSON, also for stream:true."""
        st_ = pv_stacks(case)
        st_.fake.push(st_.fake.error(status, f"Scripted failure {status} from {case} ✓"))
        r = st_.proxy.post(base_req(stream=stream))
        assert r.status == status and r.json().get("type") == "error" and r.etype == etype, pv_diag(r, st_.fake)
        assert f"Scripted failure {status} from {case}" in r.emsg, r.emsg
        assert REQ_ID.match(r.headers.get("request-id", "")), r.headers

    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    def test_tool_call_without_id_gets_one(self, pv_stacks, stream):
        """Some Gemini-compatible paths send tool calls with no id: lynkr makes one up and keeps it consistent."""
        st_ = pv_stacks("gemini")
        st_.fake.push(lambda rec: pv_oai_reply(rec, None, tools=[("x", "get_weather", {"city": "Paris"})],
                                               finish="tool_calls", no_ids=True),
                      lambda rec: pv_oai_reply(rec, "Sunny ✓"))
        body = base_req(tools=[GET_WEATHER], messages=[user("weather in Paris?")], stream=stream)
        first = pv_answer(st_.proxy.post(body), stream)
        calls_ = [b for b in first["content"] if b["type"] == "tool_use"]
        assert len(calls_) == 1 and calls_[0]["input"] == {"city": "Paris"} and TOOL_ID.match(calls_[0]["id"]), first
        body["messages"] += [assistant(first["content"]), user([tool_result(calls_[0]["id"], "18C")])]
        r = st_.proxy.post(body)
        assert r.status == 200, pv_diag(r, st_.fake)
        assert pv_text(pv_answer(r, stream)) == "Sunny ✓"
        sent = st_.fake.last.body["messages"]
        ids = [tc["id"] for m in sent for tc in m.get("tool_calls") or []]
        assert len(ids) == 1 and [m["tool_call_id"] for m in sent if m["role"] == "tool"] == ids, sent

    def test_models_list_env_only(self, pv_stacks):
        st_ = pv_stacks("openai")
        ids = [m["id"] for m in st_.proxy.call("GET", "/v1/models?limit=1000").json()["data"]]
        assert "openai,gpt-5" in ids and any("claude" in i and "," not in i for i in ids), ids

    @pytest.mark.parametrize("case", ["openai", "gemini", "openrouter", "azure-openai"])
    def test_parallel_tool_calls_interleaved(self, pv_stacks, case):
        st_ = pv_stacks(case)
        calls_ = [("call_a", "get_weather", {"city": "Paris"}), ("call_b", "get_weather", {"city": "Tōkyō"})]

        def respond(rec: Recorded) -> Reply:
            chunks = oai_stream("Checking both.", tools=calls_, finish="tool_calls", interleave=True)
            for c in chunks:
                c["model"] = rec.body["model"]
            data = oai_sse(chunks)
            return stream_reply(data, pieces=pv_split(data), gap=0.001)

        st_.fake.push(respond)
        msg = pv_answer(st_.proxy.post(base_req(tools=[GET_WEATHER], stream=True)), True)
        got = [(b["name"], b["input"]) for b in msg["content"] if b["type"] == "tool_use"]
        assert got == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Tōkyō"})], msg["content"]
        assert msg["stop_reason"] == "tool_use"

    @pytest.mark.parametrize("case", ["openai", "gemini", "openrouter", "azure-openai", "ollama"])
    def test_image_becomes_image_url(self, pv_stacks, case):
        st_ = pv_stacks(case)
        r = st_.proxy.post(base_req(messages=[user([text("what is this?"), image_b64()])]))
        assert r.status == 200, pv_diag(r, st_.fake)
        parts = st_.fake.last.body["messages"][-1]["content"]
        urls = [dig(p_, "image_url.url") for p_ in parts if isinstance(p_, dict) and p_.get("type") == "image_url"]
        assert urls == [f"data:image/png;base64,{PNG_B64}"], parts

    @pytest.mark.parametrize("choice,want", [
        ({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none"),
        ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}})])
    def test_tool_choice_mapped(self, pv_stacks, choice, want):
        st_ = pv_stacks("openai")
        r = st_.proxy.post(base_req(model="openai,gpt-4.1", tools=[GET_WEATHER],
                                    tool_choice=dict(choice, disable_parallel_tool_use=True)
                                    if choice["type"] != "none" else choice))
        assert r.status == 200, pv_diag(r, st_.fake)
        b = st_.fake.last.body
        assert b.get("tool_choice") == want, b
        if choice["type"] != "none":
            assert b.get("parallel_tool_calls") is False, b

    def test_anthropic_preset_error_passed_through(self, pv_stacks):
        st_ = pv_stacks("anthropic")
        err = anth_error(429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit")
        st_.fake.push(json_reply(err, 429, (("retry-after", "7"),)))
        r = st_.proxy.post(base_req(stream=True))
        assert r.status == 429 and r.etype == "rate_limit_error", r.data
        assert r.emsg == err["error"]["message"] and r.headers.get("retry-after") == "7", (r.headers, r.data)

    @pytest.mark.parametrize("case,var", [
        ("openai", "OPENAI_BASE_URL"), ("openrouter", "OPENROUTER_BASE_URL"), ("ollama", "OLLAMA_BASE_URL"),
        ("gemini", "GEMINI_BASE_URL"), ("openai-compatible", "OPENAI_COMPATIBLE_BASE_URL"),
        ("azure-openai", "AZURE_OPENAI_ENDPOINT"), ("anthropic", "LYNKR_ANTHROPIC_BASE_URL")])
    def test_base_url_with_trailing_slash(self, make_proxy, case, var):
        c = PV_CASES[case]
        fake = c.fake()
        try:
            env = c.env(fake)
            env[var] += "/"
            p = make_proxy(env)
            r = p.post(base_req())
            assert r.status == 200, pv_diag(r, fake, proxy=p)
            assert fake.last.path == c.path, fake.last.target
        finally:
            fake.close()

    def test_env_fallback_provider_named_after_its_preset(self, make_proxy):
        oa, an = FakeOpenAI(), FakeAnthropic()
        try:
            p = make_proxy({**PV_CASES["openai"].env(oa), "FALLBACK_PROVIDER": "anthropic",
                            "LYNKR_ANTHROPIC_API_KEY": ANTH_KEY, "LYNKR_ANTHROPIC_BASE_URL": an.url,
                            "FALLBACK_MODEL_DEFAULT": "claude-fallback-4"})
            for n, stream in enumerate((False, True), 1):
                oa.push(oa.error(503, "The server is overloaded or not ready yet.", "server_error"))
                r = p.post(base_req(stream=stream))
                assert pv_text(pv_answer(r, stream)) == an.hello, pv_diag(r, oa, an)
                pv_headers(r, "anthropic", "claude-fallback-4", "fallback")
                assert len(oa.requests) == n and len(an.requests) == n
                assert an.last.body["model"] == "claude-fallback-4"
        finally:
            oa.close()
            an.close()

    def test_openai_compatible_without_key_sends_no_authorization(self, make_proxy):
        fake = FakeOpenAICompatible()
        fake.auth_problem = lambda rec: None  # a local server started without --api-key
        try:
            p = make_proxy({"MODEL_PROVIDER": "openai-compatible", "OPENAI_COMPATIBLE_BASE_URL": f"{fake.url}/v1"})
            r = p.post(base_req(model="local-model-7b", stream=True))
            assert pv_text(pv_answer(r, True)) == fake.hello, pv_diag(r, fake, proxy=p)
            assert "authorization" not in fake.last.headers and fake.last.body["model"] == "local-model-7b"
            pv_headers(r, "openai-compatible", "local-model-7b", "default")
            pv_no_leak(fake)
        finally:
            fake.close()

    def test_env_model_map_to_the_fallback_provider(self, make_proxy):
        """MODEL_PROVIDER + FALLBACK_PROVIDER: two env providers; a MODEL_MAP target `provider,model` picks one."""
        oa, lo = FakeOpenAI(), FakeOllama()
        try:
            p = make_proxy({**PV_CASES["openai"].env(oa), "FALLBACK_PROVIDER": "ollama", "OLLAMA_BASE_URL": lo.url,
                            "MODEL_MAP": "claude-*haiku*=ollama,llama3.2"})
            r = p.post(base_req(model="claude-haiku-4-5", stream=True))
            assert pv_text(pv_answer(r, True)) == lo.hello, pv_diag(r, oa, lo, proxy=p)
            pv_headers(r, "ollama", "llama3.2", "map")
            r = p.post(base_req(model="claude-sonnet-4-5"))
            assert pv_text(pv_answer(r, False)) == oa.hello, pv_diag(r, oa, lo, proxy=p)
            pv_headers(r, "openai", "gpt-5", "default")
            assert len(oa.requests) == 1 and len(lo.requests) == 1
        finally:
            oa.close()
            lo.close()

    def test_model_default_and_env_model_map(self, make_proxy):
        fake = FakeOllama()
        try:
            p = make_proxy({**PV_CASES["ollama"].env(fake), "MODEL_DEFAULT": "llama3.2",
                            "MODEL_MAP": "claude-*haiku*=codellama:13b"})
            r = p.post(base_req(model="claude-sonnet-4-5"))
            assert r.status == 200 and fake.last.body["model"] == "llama3.2", pv_diag(r, fake)
            pv_headers(r, "ollama", "llama3.2", "default")
            r = p.post(base_req(model="claude-haiku-4-5"))
            assert r.status == 200 and fake.last.body["model"] == "codellama:13b", pv_diag(r, fake)
            pv_headers(r, "ollama", "codellama:13b", "map")
        finally:
            fake.close()


# -- several providers from a config file --

PV_OA, PV_AN, PV_LO = "oai-main", "anth-direct", "ollama-home"  # provider names in the config files
PV_KEY_ENV = {"PV_OA_KEY": OPENAI_KEY, "PV_AN_KEY": ANTH_KEY}


def pv_two_provider_toml(oa: FakeHTTP, an: FakeHTTP, router: str = "") -> str:
    return textwrap.dedent(f"""\
        # two providers at once
        [providers.{PV_OA}]
        kind = "openai"
        base_url = "{oa.url}/v1"
        api_key = "$PV_OA_KEY"

        [providers.{PV_AN}]
        kind = "anthropic"
        base_url = "{an.url}"
        api_key = "${{PV_AN_KEY}}"
        model = "claude-sonnet-4-5"

        [router]
        default = "{PV_OA},gpt-4.1"
        """) + router


def pv_route_toml(oa: FakeHTTP, an: FakeHTTP, lo: FakeHTTP) -> str:
    return textwrap.dedent(f"""\
        [providers.{PV_OA}]
        kind = "openai"
        base_url = "{oa.url}/v1"
        api_key = "$PV_OA_KEY"
        models = ["gpt-4o-mini"]

        [providers.{PV_AN}]
        kind = "anthropic"
        base_url = "{an.url}"
        api_key = "${{PV_AN_KEY}}"
        model = "claude-sonnet-4-5"

        [providers.{PV_LO}]
        kind = "ollama"
        base_url = "{lo.url}"

        [router]
        default = "{PV_OA},gpt-4.1"
        background = "{PV_LO},qwen2.5-coder:7b"
        think = "{PV_AN},claude-opus-4-1"
        long_context = "{PV_AN},claude-sonnet-4-5"
        long_context_threshold = 5000
        web_search = "{PV_AN},claude-haiku-4-5"
        """)


@dataclasses.dataclass
class RouteStack:
    oa: FakeOpenAI
    an: FakeAnthropic
    lo: FakeOllama
    proxy: Proxy

    def fake(self, provider: str) -> FakeHTTP:
        return {PV_OA: self.oa, PV_AN: self.an, PV_LO: self.lo}[provider]

    @property
    def fakes(self) -> list[FakeHTTP]:
        return [self.oa, self.an, self.lo]


@pytest.fixture(scope="module")
def pv_route_stack(tmp_path_factory):
    oa, an, lo = FakeOpenAI(), FakeAnthropic(), FakeOllama()
    tmp = tmp_path_factory.mktemp("pv-routes")
    cfg = tmp / "conf" / "routes.toml"
    cfg.parent.mkdir()
    cfg.write_text(pv_route_toml(oa, an, lo))
    try:
        proxy = start_proxy(tmp, {**PV_KEY_ENV, "MODEL_MAP": f"claude-special-*={PV_LO},codellama:13b"},
                            args=("--port", "0", "--config", str(cfg)))
    except BaseException:
        for f in (oa, an, lo):
            f.close()
        raise
    yield RouteStack(oa, an, lo, proxy)
    proxy.stop()
    for f in (oa, an, lo):
        f.close()


@pytest.fixture
def routes(pv_route_stack) -> RouteStack:
    for f in pv_route_stack.fakes:
        f.reset()
    return pv_route_stack


LONG_TEXT = "lorem ipsum dolor sit amet " * 2400  # ~65 KB: far above long_context_threshold = 5000 tokens
THINK = {"max_tokens": 4096, "thinking": {"type": "enabled", "budget_tokens": 2048}}
WEB_SEARCH_TOOL = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}

ROUTE_CASES = [
    ("plain", base_req(model="claude-sonnet-4-5"), "default", PV_OA, "gpt-4.1"),
    ("opus", base_req(model="claude-opus-5-5"), "default", PV_OA, "gpt-4.1"),
    ("haiku", base_req(model="claude-haiku-4-5-20251001"), "background", PV_LO, "qwen2.5-coder:7b"),
    ("haiku-3-5", base_req(model="claude-3-5-haiku-latest"), "background", PV_LO, "qwen2.5-coder:7b"),
    ("think-enabled", base_req(**THINK), "think", PV_AN, "claude-opus-4-1"),
    ("think-adaptive", base_req(thinking={"type": "adaptive"}), "think", PV_AN, "claude-opus-4-1"),
    ("think-disabled", base_req(thinking={"type": "disabled"}), "default", PV_OA, "gpt-4.1"),
    ("long", base_req(messages=[user(LONG_TEXT)]), "long_context", PV_AN, "claude-sonnet-4-5"),
    ("web-search", base_req(tools=[WEB_SEARCH_TOOL]), "web_search", PV_AN, "claude-haiku-4-5"),
    ("explicit", base_req(model=f"{PV_LO},llama3.2"), "explicit", PV_LO, "llama3.2"),
    ("explicit-anthropic", base_req(model=f"{PV_AN},claude-3-7-sonnet-latest"), "explicit", PV_AN,
     "claude-3-7-sonnet-latest"),
    ("map", base_req(model="claude-special-7"), "map", PV_LO, "codellama:13b"),
    # precedence: explicit > map > long_context > background > web_search > think > default
    ("explicit-beats-all", base_req(model=f"{PV_OA},gpt-4o", messages=[user(LONG_TEXT)], **THINK), "explicit",
     PV_OA, "gpt-4o"),
    ("map-beats-long", base_req(model="claude-special-9", messages=[user(LONG_TEXT)]), "map", PV_LO,
     "codellama:13b"),
    ("long-beats-haiku", base_req(model="claude-haiku-4-5", messages=[user(LONG_TEXT)]), "long_context", PV_AN,
     "claude-sonnet-4-5"),
    ("haiku-beats-web-search", base_req(model="claude-haiku-4-5", tools=[WEB_SEARCH_TOOL]), "background", PV_LO,
     "qwen2.5-coder:7b"),
    ("haiku-beats-think", base_req(model="claude-haiku-4-5", **THINK), "background", PV_LO, "qwen2.5-coder:7b"),
    ("web-search-beats-think", base_req(tools=[WEB_SEARCH_TOOL], **THINK), "web_search", PV_AN, "claude-haiku-4-5"),
]


class TestRouting:
    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    @pytest.mark.parametrize("body,route,provider,model", [c[1:] for c in ROUTE_CASES], ids=[c[0] for c in ROUTE_CASES])
    def test_route_chosen_by_request_shape(self, routes, body, route, provider, model, stream):
        r = routes.proxy.post(dict(body, stream=stream))
        assert r.status == 200, pv_diag(r, *routes.fakes, proxy=routes.proxy)
        fake = routes.fake(provider)
        assert pv_text(pv_answer(r, stream)) == fake.hello
        pv_headers(r, provider, model, route)
        assert [len(f.requests) for f in routes.fakes] == [int(f is fake) for f in routes.fakes], \
            [(type(f).__name__, len(f.requests)) for f in routes.fakes]
        assert fake.last.body["model"] == model
        pv_no_leak(*routes.fakes)

    def test_long_context_threshold_is_strictly_greater(self, tmp_path, make_proxy):
        """The estimate count_tokens reports decides: == threshold stays default, threshold + 1 is long_context."""
        oa, lo = FakeOpenAI(), FakeOllama()
        try:
            (tmp_path / "lynkr.toml").write_text(textwrap.dedent(f"""\
                [providers.{PV_OA}]
                kind = "openai"
                base_url = "{oa.url}/v1"
                api_key = "$PV_OA_KEY"
                [providers.{PV_LO}]
                kind = "ollama"
                base_url = "{lo.url}"
                [router]
                default = "{PV_OA},gpt-4.1"
                long_context = "{PV_LO},llama3.2"
                long_context_threshold = 3000
                """))
            p = make_proxy(PV_KEY_ENV)

            def body(n: int) -> dict:
                return base_req(messages=[user("x" * n)])

            def count(n: int) -> int:
                r = p.post({k: v for k, v in body(n).items() if k != "max_tokens"}, path="/v1/messages/count_tokens")
                assert r.status == 200, r.data
                return r.json()["input_tokens"]

            lo_n, hi_n = 1, 100000  # smallest n whose estimate is above 3000
            assert count(hi_n) > 3000
            while lo_n < hi_n:
                mid = (lo_n + hi_n) // 2
                lo_n, hi_n = (lo_n, mid) if count(mid) > 3000 else (mid + 1, hi_n)
            assert count(hi_n - 1) == 3000 and count(hi_n) == 3001
            r = p.post(body(hi_n - 1))
            assert r.status == 200, pv_diag(r, oa, lo, proxy=p)
            pv_headers(r, PV_OA, "gpt-4.1", "default")
            r = p.post(body(hi_n))
            assert r.status == 200, pv_diag(r, oa, lo, proxy=p)
            pv_headers(r, PV_LO, "llama3.2", "long_context")
        finally:
            oa.close()
            lo.close()

    def test_concurrent_streams_to_three_providers(self, routes):
        """Claude Code sends background (haiku) calls while a main turn streams: no cross-talk between providers."""
        bodies = [(base_req(stream=True, messages=[user(f"main {i}")]), routes.oa) for i in range(3)]
        bodies += [(base_req(model="claude-haiku-4-5", stream=True, messages=[user(f"bg {i}")]), routes.lo)
                   for i in range(3)]
        bodies += [(base_req(stream=True, messages=[user(f"think {i}")], **THINK), routes.an) for i in range(3)]
        for f in routes.fakes:  # each fake's own answer, streamed slowly so that the nine streams overlap
            f.push(*[lambda rec, f=f: dataclasses.replace(f.default(rec), gap=0.004)] * 3)
        with ThreadPoolExecutor(len(bodies)) as ex:
            results = list(ex.map(lambda bf: routes.proxy.post(bf[0]), bodies))
        for (body, fake), r in zip(bodies, results):
            assert pv_text(pv_answer(r, True)) == fake.hello, (body["messages"], r.headers)
        assert [len(f.requests) for f in routes.fakes] == [3, 3, 3]

    def test_unknown_provider_in_model_is_400_listing_known(self, routes):
        for stream in (False, True):
            r = routes.proxy.post(base_req(model="nope,some-model", stream=stream))
            assert r.status == 400 and r.etype == "invalid_request_error", (r.status, r.data)
            for name in (PV_OA, PV_AN, PV_LO):
                assert name in r.emsg, r.emsg
        assert all(f.requests == [] for f in routes.fakes)

    def test_models_list_has_provider_model_ids(self, routes):
        r = routes.proxy.call("GET", "/v1/models?limit=1000")
        assert r.status == 200, r.data
        ids = [m["id"] for m in r.json()["data"]]
        want = {f"{PV_OA},gpt-4.1", f"{PV_OA},gpt-4o-mini", f"{PV_OA},gpt-5", f"{PV_LO},qwen2.5-coder:7b",
                f"{PV_AN},claude-opus-4-1", f"{PV_AN},claude-sonnet-4-5", f"{PV_AN},claude-haiku-4-5"}
        assert want <= set(ids), sorted(want - set(ids))
        assert any("claude" in i and "," not in i for i in ids), ids  # the Claude aliases are still listed
        assert len(ids) == len(set(ids)), ids
        for m in r.json()["data"]:
            assert m["type"] == "model" and m.get("display_name"), m

    def test_settings_table_applies(self, tmp_path, make_proxy):
        oa, an = FakeOpenAI(), FakeAnthropic()
        try:
            (tmp_path / "lynkr.toml").write_text(pv_two_provider_toml(oa, an) + textwrap.dedent(f"""
                [settings]
                MODEL_MAP = "claude-from-settings={PV_AN},claude-opus-4-1"
                """))
            p = make_proxy(PV_KEY_ENV)
            r = p.post(base_req(model="claude-from-settings"))
            assert r.status == 200, pv_diag(r, oa, an, proxy=p)
            pv_headers(r, PV_AN, "claude-opus-4-1", "map")
            assert an.last.body["model"] == "claude-opus-4-1" and oa.requests == []
        finally:
            oa.close()
            an.close()


class TestProviderOptions:
    def test_headers_api_version_and_default_model_from_config(self, tmp_path, make_proxy):
        orr, az = FakeOpenRouter(), FakeAzureOpenAI()
        try:
            (tmp_path / "lynkr.toml").write_text(textwrap.dedent(f"""\
                [providers.router]
                kind = "openrouter"
                base_url = "$PV_OR_BASE"
                api_key = "$PV_OR_KEY"
                headers = {{HTTP-Referer = "https://lynkr.example", X-Title = "lynkr tests"}}

                [providers.corp]
                kind = "azure-openai"
                base_url = "{az.url}"
                api_key = "$PV_AZ_KEY"
                api_version = "2025-04-01-preview"
                model = "gpt-5-prod"

                [router]
                default = "router,anthropic/claude-sonnet-4.5"
                background = "corp,gpt-4o-prod"
                """))
            p = make_proxy({"PV_OR_KEY": OPENROUTER_KEY, "PV_AZ_KEY": AZOAI_KEY, "PV_OR_BASE": f"{orr.url}/api/v1"})
            r = p.post(base_req())
            assert r.status == 200, pv_diag(r, orr, az, proxy=p)
            assert orr.last.headers.get("http-referer") == "https://lynkr.example", orr.last.headers
            assert orr.last.headers.get("x-title") == "lynkr tests", orr.last.headers
            assert orr.last.body["model"] == "anthropic/claude-sonnet-4.5"
            r = p.post(base_req(model="claude-haiku-4-5", stream=True))
            assert r.status == 200, pv_diag(r, orr, az, proxy=p)
            pv_answer(r, True)
            pv_headers(r, "corp", "gpt-4o-prod", "background")
            assert az.last.path == "/openai/deployments/gpt-4o-prod/chat/completions", az.last.target
            assert urllib.parse.parse_qs(az.last.query) == {"api-version": ["2025-04-01-preview"]}, az.last.target
            assert az.last.headers.get("api-key") == AZOAI_KEY
            r = p.post(base_req(model="corp,gpt-5-prod"))
            assert r.status == 200, pv_diag(r, orr, az, proxy=p)
            assert az.last.path == "/openai/deployments/gpt-5-prod/chat/completions"
            pv_headers(r, "corp", "gpt-5-prod", "explicit")
        finally:
            orr.close()
            az.close()


class TestOriginalKindsInConfig:
    def test_databricks_both_formats_and_azure_anthropic(self, tmp_path, new_dbx, new_az, make_proxy):
        dbx, az = new_dbx(), new_az()
        (tmp_path / "lynkr.toml").write_text(textwrap.dedent(f"""\
            [providers.dbx]
            kind = "databricks"
            base_url = "{dbx.url}"
            api_key = "$PV_DBX_KEY"

            [providers.dbxgw]
            kind = "databricks"
            base_url = "{dbx.url}"
            api_key = "$PV_DBX_KEY"
            format = "anthropic"

            [providers.foundry]
            kind = "azure-anthropic"
            base_url = "{az.url}/anthropic/v1/messages"
            api_key = "$PV_AZ_KEY"

            [router]
            default = "dbx,databricks-claude-sonnet-4-5"
            think = "dbxgw,databricks-claude-opus-4-1"
            background = "foundry,claude-haiku-4-5"
            """))
        p = make_proxy({"PV_DBX_KEY": DBX_KEY, "PV_AZ_KEY": AZ_KEY})
        body = cc_body(model="claude-sonnet-4-5", stream=True)
        body.pop("thinking")
        r = p.post(body, path="/v1/messages?beta=true", headers=CC_HEADERS)
        assert pv_text(pv_answer(r, True)) == "Hello from fake Databricks", pv_diag(r, dbx, az, proxy=p)
        pv_headers(r, "dbx", "databricks-claude-sonnet-4-5", "default")
        assert dbx.last.path == "/serving-endpoints/databricks-claude-sonnet-4-5/invocations"
        assert "model" not in dbx.last.body and dbx.last.headers["authorization"] == f"Bearer {DBX_KEY}"
        r = p.post(cc_body(model="claude-sonnet-4-5"), path="/v1/messages?beta=true", headers=CC_HEADERS)
        assert pv_text(pv_answer(r, True)) == "Hello from the Databricks AI gateway", pv_diag(r, dbx, az, proxy=p)
        pv_headers(r, "dbxgw", "databricks-claude-opus-4-1", "think")
        assert dbx.last.path == "/ai-gateway/anthropic/v1/messages"
        assert dbx.last.body["model"] == "databricks-claude-opus-4-1"
        r = p.post(base_req(model="claude-haiku-4-5"))
        assert pv_text(pv_answer(r, False)) == "Hello from fake Azure", pv_diag(r, dbx, az, proxy=p)
        pv_headers(r, "foundry", "claude-haiku-4-5", "background")
        assert az.last.path == "/anthropic/v1/messages" and az.last.body["model"] == "claude-haiku-4-5"
        assert AZ_KEY in (az.last.headers.get("x-api-key"), az.last.headers.get("api-key"))
        pv_no_leak(dbx, az)


class TestConfigLocation:
    @pytest.mark.parametrize("how", ["--config", "LYNKR_CONFIG"])
    def test_named_file_beats_the_one_in_cwd(self, tmp_path, make_proxy, how):
        used, ignored, an = FakeOpenAI(), FakeOpenAI(), FakeAnthropic()
        try:
            (tmp_path / "lynkr.toml").write_text(pv_two_provider_toml(ignored, an))
            named = tmp_path / "named.toml"
            named.write_text(pv_two_provider_toml(used, an))
            extra, args = dict(PV_KEY_ENV), ("--port", "0")
            if how == "--config":
                args = (*args, "--config", str(named))
            else:
                extra["LYNKR_CONFIG"] = str(named)
            p = make_proxy(extra, args=args)
            assert p.post(base_req()).status == 200
            assert len(used.requests) == 1 and ignored.requests == []
        finally:
            for f in (used, ignored, an):
                f.close()

    @pytest.mark.parametrize("where", ["cwd", "--config", "LYNKR_CONFIG"])
    def test_two_providers_at_once(self, tmp_path, make_proxy, where):
        oa, an = FakeOpenAI(), FakeAnthropic()
        try:
            proj = tmp_path / "proj"
            proj.mkdir()
            extra, args = dict(PV_KEY_ENV), ["--port", "0"]
            cfg = proj / "lynkr.toml" if where == "cwd" else tmp_path / "elsewhere" / "my-lynkr.toml"
            cfg.parent.mkdir(exist_ok=True)
            cfg.write_text(pv_two_provider_toml(oa, an))
            if where == "--config":
                args += ["--config", str(cfg)]
            elif where == "LYNKR_CONFIG":
                extra["LYNKR_CONFIG"] = str(cfg)
            p = make_proxy(extra, args=tuple(args), cwd=proj)
            r = p.post(base_req(model="claude-sonnet-4-5"))
            assert pv_text(pv_answer(r, False)) == oa.hello, pv_diag(r, oa, an, proxy=p)
            pv_headers(r, PV_OA, "gpt-4.1", "default")
            r = p.post(base_req(model=f"{PV_AN},claude-opus-4-1", stream=True))
            assert pv_text(pv_answer(r, True)) == an.hello, pv_diag(r, oa, an, proxy=p)
            pv_headers(r, PV_AN, "claude-opus-4-1", "explicit")
            assert len(oa.requests) == 1 and len(an.requests) == 1
            assert oa.last.headers["authorization"] == f"Bearer {OPENAI_KEY}" and an.last.headers["x-api-key"] == ANTH_KEY
            pv_no_leak(oa, an)
        finally:
            oa.close()
            an.close()


# -- fallback chains and per-provider breakers --


def pv_fallback_toml(first_url: str, second: FakeHTTP, third: FakeHTTP, extra: str = "") -> str:
    return textwrap.dedent(f"""\
        [providers.first]
        kind = "openai"
        base_url = "{first_url}/v1"
        api_key = "$PV_OA_KEY"

        [providers.second]
        kind = "anthropic"
        base_url = "{second.url}"
        api_key = "$PV_AN_KEY"

        [providers.third]
        kind = "ollama"
        base_url = "{third.url}"

        [router]
        default = "first,gpt-4.1"
        background = "first,gpt-4.1-mini"
        think = "first,o3"

        [router.fallback]
        default = ["second,claude-sonnet-4-5", "third,qwen2.5-coder:7b"]
        think = ["third,llama3.2"]
        """) + extra


class TestFallback:
    @pytest.fixture
    def chain(self, tmp_path, make_proxy):
        """chain(**env, first_url=None) -> (proxy, first, second, third) from a lynkr.toml in cwd."""
        made: list[FakeHTTP] = []

        def make(first_url: str | None = None, **env: Any):
            first, second, third = rel_stamp(FakeOpenAI()), rel_stamp(FakeAnthropic()), rel_stamp(FakeOllama())
            made.extend((first, second, third))
            (tmp_path / "lynkr.toml").write_text(pv_fallback_toml(first_url or first.url, second, third))
            return make_proxy({**PV_KEY_ENV, **env}), first, second, third

        yield make
        for f in made:
            f.close()

    @pytest.mark.parametrize("status", [503, 500, 429])
    def test_first_fails_second_answers(self, chain, status):
        p, first, second, third = chain()
        for n, stream in enumerate((False, True), 1):
            first.push(first.error(status, f"scripted {status}", "server_error" if status >= 500 else "requests"))
            r = p.post(base_req(stream=stream))
            assert pv_text(pv_answer(r, stream)) == second.hello, pv_diag(r, first, second, third, proxy=p)
            pv_headers(r, "second", "claude-sonnet-4-5", "fallback")
            assert (len(first.requests), len(second.requests), len(third.requests)) == (n, n, 0)
            assert first.stamps[-1] < second.stamps[-1]
            assert second.last.body["model"] == "claude-sonnet-4-5"

    def test_healthy_first_is_not_a_fallback(self, chain):
        p, first, second, third = chain()
        for stream in (False, True):
            r = p.post(base_req(stream=stream))
            assert pv_text(pv_answer(r, stream)) == first.hello, pv_diag(r, first, proxy=p)
            pv_headers(r, "first", "gpt-4.1", "default")
        assert second.requests == [] and third.requests == []
        ids = {m["id"] for m in p.call("GET", "/v1/models?limit=1000").json()["data"]}
        assert {"first,gpt-4.1", "first,gpt-4.1-mini", "first,o3", "second,claude-sonnet-4-5",
                "third,qwen2.5-coder:7b", "third,llama3.2"} <= ids, sorted(ids)

    def test_all_failing_gives_an_anthropic_error(self, chain):
        p, first, second, third = chain()
        for stream in (False, True):
            first.push(first.error(500, "boom", "server_error"))
            second.push(second.error(529, "Overloaded", "overloaded_error"))
            third.push(third.error(503, "busy", "api_error"))
            r = p.post(base_req(stream=stream))
            assert r.status >= 500 and r.json().get("type") == "error" and r.etype, pv_diag(r, first, second, third)
        assert (len(first.requests), len(second.requests), len(third.requests)) == (2, 2, 2)

    def test_metrics_are_labelled_with_provider_names(self, chain):
        p, first, _second, _third = chain()
        first.push(first.error(503, "down", "server_error"))
        assert p.post(base_req()).status == 200
        assert p.post(base_req(model="claude-sonnet-4-5")).status == 200
        m = rel_scrape(p)
        for name, n in (("first", 2), ("second", 1)):
            assert m.get("lynkr_upstream_duration_seconds_count", provider=name) == n, (name, m.select(
                "lynkr_upstream_duration_seconds_count"))
        assert m.get("lynkr_upstream_duration_seconds_count", provider="third") == 0
        assert m.get("lynkr_upstream_failovers_total") == 1
        providers = {lab.get("provider") for lab, _ in m.select("lynkr_requests_total")}
        assert {"first", "second"} <= providers, providers

    def test_chain_tried_in_order(self, chain):
        p, first, second, third = chain()
        for n, stream in enumerate((False, True), 1):
            first.push(first.error(500, "boom", "server_error"))
            second.push(second.error(503, "overloaded", "overloaded_error"))
            r = p.post(base_req(stream=stream))
            assert pv_text(pv_answer(r, stream)) == third.hello, pv_diag(r, first, second, third, proxy=p)
            pv_headers(r, "third", "qwen2.5-coder:7b", "fallback")
            assert (len(first.requests), len(second.requests), len(third.requests)) == (n, n, n)
            assert first.stamps[-1] < second.stamps[-1] < third.stamps[-1]

    def test_unreachable_first_falls_back(self, chain):
        p, _first, second, third = chain(first_url=f"http://127.0.0.1:{free_port()}")
        r = p.post(base_req(stream=True))
        assert pv_text(pv_answer(r, True)) == second.hello, pv_diag(r, second, third, proxy=p)
        pv_headers(r, "second", "claude-sonnet-4-5", "fallback")

    def test_route_with_its_own_list_and_route_without(self, chain):
        p, first, second, third = chain()
        first.push(first.error(503, "down", "server_error"))
        r = p.post(base_req(**THINK))  # think has its own fallback list
        assert pv_text(pv_answer(r, False)) == third.hello, pv_diag(r, first, second, third, proxy=p)
        pv_headers(r, "third", "llama3.2", "fallback")
        assert first.last.body["model"] == "o3" and second.requests == []
        first.push(first.error(503, "down", "server_error"))
        r = p.post(base_req(model="claude-haiku-4-5"))  # background has none: the default list applies
        assert pv_text(pv_answer(r, False)) == second.hello, pv_diag(r, first, second, third, proxy=p)
        pv_headers(r, "second", "claude-sonnet-4-5", "fallback")
        assert first.last.body["model"] == "gpt-4.1-mini"

    def test_client_error_is_not_failed_over(self, chain):
        p, first, second, third = chain()
        first.push(first.error(400, "Invalid 'messages[0].content': string too long."))
        r = p.post(base_req())
        assert r.status == 400 and r.etype == "invalid_request_error", r.data
        assert "string too long" in r.emsg
        assert second.requests == [] and third.requests == []

    def test_breaker_per_provider(self, chain):
        p, first, second, third = chain(CIRCUIT_BREAKER_FAILURES=1, CIRCUIT_BREAKER_RESET_MS=60000)
        first.push(first.error(500, "boom", "server_error"))
        r = p.post(base_req())
        assert pv_text(pv_answer(r, False)) == second.hello, pv_diag(r, first, second, third, proxy=p)
        for stream in (False, True):
            t0 = time.monotonic()
            r = p.post(base_req(stream=stream))
            assert pv_text(pv_answer(r, stream)) == second.hello, pv_diag(r, first, second, third, proxy=p)
            pv_headers(r, "second", "claude-sonnet-4-5", "fallback")
            assert time.monotonic() - t0 < 2
        assert len(first.requests) == 1, "first's breaker is open: it must not be contacted"
        assert len(second.requests) == 3 and third.requests == []
        m = rel_scrape(p)
        assert m.get("lynkr_circuit_breaker_state", provider="first") == 1
        assert m.get("lynkr_circuit_breaker_state", provider="second") == 0


# -- bad configuration --

PV_GOOD_PROVIDERS = textwrap.dedent("""\
    [providers.good]
    kind = "openai"
    base_url = "http://127.0.0.1:9/v1"
    api_key = "sk-inline-key-for-bad-config-tests"
    """)

BAD_CONFIGS = [
    ("unknown-kind", PV_GOOD_PROVIDERS + '[providers.weird]\nkind = "bedrockish"\n[router]\ndefault = "good,gpt-4.1"\n',
     ("kind", "bedrockish")),
    ("missing-kind", PV_GOOD_PROVIDERS + '[providers.nokind]\nbase_url = "http://127.0.0.1:9"\n[router]\n'
                                         'default = "good,gpt-4.1"\n', ("kind",)),
    ("route-unknown-provider", PV_GOOD_PROVIDERS + '[router]\ndefault = "ghost,gpt-4.1"\n', ("default", "ghost")),
    ("background-unknown-provider", PV_GOOD_PROVIDERS + '[router]\ndefault = "good,gpt-4.1"\nbackground = "ghost,m"\n',
     ("background", "ghost")),
    ("fallback-unknown-provider", PV_GOOD_PROVIDERS + ('[router]\ndefault = "good,gpt-4.1"\n[router.fallback]\n'
                                                       'default = ["ghost,m"]\n'), ("ghost",)),
    ("unset-var", PV_GOOD_PROVIDERS.replace("sk-inline-key-for-bad-config-tests", "$PV_SURELY_UNSET_VAR")
     + '[router]\ndefault = "good,gpt-4.1"\n', ("api_key", "PV_SURELY_UNSET_VAR")),
    ("unset-var-braces", PV_GOOD_PROVIDERS.replace("sk-inline-key-for-bad-config-tests", "${PV_SURELY_UNSET_VAR}")
     + '[router]\ndefault = "good,gpt-4.1"\n', ("api_key", "PV_SURELY_UNSET_VAR")),
    ("no-comma", PV_GOOD_PROVIDERS + '[router]\ndefault = "gpt-4.1"\n', ("default",)),
    ("empty-model", PV_GOOD_PROVIDERS + '[router]\ndefault = "good,"\n', ("default",)),
    ("empty-provider", PV_GOOD_PROVIDERS + '[router]\ndefault = ",gpt-4.1"\n', ("default",)),
    ("fallback-no-comma", PV_GOOD_PROVIDERS + '[router]\ndefault = "good,gpt-4.1"\n[router.fallback]\n'
                                              'default = ["good"]\n', ("fallback",)),
    ("unknown-route", PV_GOOD_PROVIDERS + '[router]\ndefault = "good,gpt-4.1"\nthinking = "good,o3"\n', ("thinking",)),
    ("bad-threshold", PV_GOOD_PROVIDERS + '[router]\ndefault = "good,gpt-4.1"\nlong_context_threshold = "lots"\n',
     ("long_context_threshold",)),
    ("toml-syntax", PV_GOOD_PROVIDERS + '[router\ndefault = "good,gpt-4.1"\n', ()),
    ("unknown-setting", PV_GOOD_PROVIDERS + '[router]\ndefault = "good,gpt-4.1"\n[settings]\nNOT_A_LYNKR_SETTING = "1"\n',
     ("NOT_A_LYNKR_SETTING",)),
]


def pv_one_error_line(r: subprocess.CompletedProcess, fname: str, words: tuple) -> str:
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2, f"exit {r.returncode}, stderr:\n{r.stderr[-2000:]}"
    assert "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and lines[0].startswith("lynkr: "), f"want one 'lynkr: ' line, got:\n{r.stderr}"
    assert fname in lines[0], f"the line should name the file {fname}: {lines[0]}"
    for w in words:
        assert w in lines[0], f"the line should name {w!r}: {lines[0]}"
    return lines[0]


class TestBadConfig:
    @pytest.mark.parametrize("toml,words", [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
    def test_exits_2_with_one_line(self, tmp_path, toml, words):
        (tmp_path / "lynkr.toml").write_text(toml)
        pv_one_error_line(run_lynkr(tmp_path, timeout=8), "lynkr.toml", words)

    @pytest.mark.parametrize("how", ["--config", "LYNKR_CONFIG"])
    def test_named_file_is_the_one_reported(self, tmp_path, how):
        cfg = tmp_path / "conf" / "broken-providers.toml"
        cfg.parent.mkdir()
        cfg.write_text(PV_GOOD_PROVIDERS + '[router]\ndefault = "ghost,gpt-4.1"\n')
        if how == "--config":
            r = run_lynkr(tmp_path, args=("--port", "0", "--config", str(cfg)))
        else:
            r = run_lynkr(tmp_path, {"LYNKR_CONFIG": str(cfg)})
        pv_one_error_line(r, "broken-providers.toml", ("default", "ghost"))

    def test_missing_config_file_exits_2(self, tmp_path):
        r = run_lynkr(tmp_path, args=("--port", "0", "--config", str(tmp_path / "no-such-lynkr.toml")))
        pv_one_error_line(r, "no-such-lynkr.toml", ())


# -- doctor --


class TestDoctor:
    def doctor(self, tmp_path: Path, oa_url: str, an_url: str) -> subprocess.CompletedProcess:
        cfg = tmp_path / "doctor.toml"
        cfg.write_text(textwrap.dedent(f"""\
            [providers.{PV_OA}]
            kind = "openai"
            base_url = "{oa_url}/v1"
            api_key = "$PV_OA_KEY"

            [providers.{PV_AN}]
            kind = "anthropic"
            base_url = "{an_url}"
            api_key = "$PV_AN_KEY"
            model = "claude-sonnet-4-5"

            [router]
            default = "{PV_OA},gpt-4.1"
            think = "{PV_AN},claude-opus-4-1"
            """))
        return run_lynkr(tmp_path, {**PV_KEY_ENV, "UPSTREAM_READ_TIMEOUT_MS": 1500},
                         args=("doctor", "--config", str(cfg)), timeout=30)

    @staticmethod
    def output(r: subprocess.CompletedProcess) -> str:
        out = r.stdout + r.stderr
        for key in (OPENAI_KEY, ANTH_KEY):
            assert key not in out, f"doctor printed a whole key:\n{out}"
        return out

    def test_all_providers_answer(self, tmp_path):
        oa, an = FakeOpenAI(), FakeAnthropic()
        try:
            r = self.doctor(tmp_path, oa.url, an.url)
            out = self.output(r)
            assert r.returncode == 0, out
            for name in (PV_OA, PV_AN):
                assert name in out, out
            for key in (OPENAI_KEY, ANTH_KEY):  # masked like `sk-t…(N chars)`
                assert f"{key[:4]}…" in out or f"{key[:4]}..." in out, out
            assert "OK" in out and "FAIL" not in out, out
            assert "default" in out and "think" in out, out  # the routes are listed
            assert oa.url in out and an.url in out, out  # base URLs
            assert "openai" in out and "anthropic" in out, out  # kinds / presets
            assert len(oa.requests) == 1 and len(an.requests) == 1, out
            oab, anb = oa.last.body, an.last.body
            assert oab["model"] == "gpt-5" and oab.get("max_completion_tokens") == 1, oab  # the preset's default model
            assert anb["model"] == "claude-sonnet-4-5" and anb.get("max_tokens") == 1, anb
        finally:
            oa.close()
            an.close()

    @pytest.mark.parametrize("failure", ["closed", "erroring", "unauthorized", "hanging"])
    def test_one_provider_failing_exits_1(self, tmp_path, failure):
        oa, an = FakeOpenAI(), FakeAnthropic()
        try:
            an_url = an.url
            if failure == "closed":
                an_url = f"http://127.0.0.1:{free_port()}"
            elif failure == "erroring":
                an.default = lambda rec: an.error(500, "Internal server error", "api_error")
            elif failure == "unauthorized":
                an.key = "sk-ant-some-other-key"
            else:
                an.default = lambda rec: Reply(200, b"{}", (("content-type", "application/json"),), hang=60)
            t0 = time.monotonic()
            r = self.doctor(tmp_path, oa.url, an_url)
            out = self.output(r)
            assert r.returncode == 1, out
            assert "FAIL" in out and "OK" in out, out
            fail_lines = [x for x in out.splitlines() if "FAIL" in x]
            assert any(PV_AN in x for x in fail_lines) and not any(PV_OA in x for x in fail_lines), out
            assert time.monotonic() - t0 < 25
        finally:
            oa.close()
            an.close()

    def test_env_only_preset_without_key_fails(self, tmp_path):
        r = run_lynkr(tmp_path, {"MODEL_PROVIDER": "openai", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"},
                      args=("doctor",), timeout=30)
        out = r.stdout + r.stderr
        assert r.returncode == 1 and "FAIL" in out and "OPENAI_API_KEY" in out, out

    def test_env_only_preset(self, tmp_path):
        oa = FakeOpenAI()
        try:
            r = run_lynkr(tmp_path, PV_CASES["openai"].env(oa), args=("doctor",), timeout=30)
            out = self.output(r)
            assert r.returncode == 0 and "openai" in out and OPENAI_KEY[:4] in out, out
            assert len(oa.requests) == 1
        finally:
            oa.close()


# -- end to end: the official anthropic SDK and the real Claude Code CLI --


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
class TestProvidersSDK:
    def test_streams_through_two_providers(self, routes):
        require_e2e("the anthropic Python SDK", importlib.util.find_spec("anthropic") is not None)
        import anthropic

        client = anthropic.Anthropic(base_url=routes.proxy.url, api_key=CLIENT_KEY, max_retries=0, timeout=30)
        for model, fake in ((f"{PV_OA},gpt-4.1", routes.oa), (f"{PV_AN},claude-opus-4-1", routes.an)):
            with client.messages.stream(model=model, max_tokens=256, tools=[GET_WEATHER],
                                        messages=[{"role": "user", "content": "hello"}]) as s:
                pieces = list(s.text_stream)
                final = s.get_final_message()
                headers = s.response.headers
            assert "".join(pieces) == fake.hello and final.content[0].text == fake.hello
            assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
            assert headers.get("x-lynkr-provider") == model.split(",")[0]
            assert headers.get("x-lynkr-route") == "explicit"
            assert fake.last.body["model"] == model.split(",", 1)[1] and fake.last.body["stream"] is True
        assert len(routes.oa.requests) == 1 and len(routes.an.requests) == 1 and routes.lo.requests == []
        pv_no_leak(*routes.fakes)


def pv_claude(claude: str, proxy: Proxy, tmp: Path, prompt: str, model: str | None = None,
              tools: str | None = "Bash") -> dict:
    home = tmp / "claude-home"
    home.mkdir(exist_ok=True)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "ANTHROPIC_BASE_URL": proxy.url,
           "ANTHROPIC_API_KEY": CLIENT_KEY, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
           "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1", "DISABLE_AUTOUPDATER": "1",
           "CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK": "1", "CLAUDE_CODE_MAX_RETRIES": "1"}
    cmd = [claude, "--bare", "--no-session-persistence", "--output-format", "json",
           *(["--tools", tools, "--allowedTools", tools] if tools else []),
           *(["--model", model] if model else []), "-p", prompt]
    p = subprocess.run(cmd, check=False, cwd=tmp, env=env, capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    diag = f"exit {p.returncode}\nstdout: {p.stdout[-3000:]}\nstderr: {p.stderr[-3000:]}\nproxy:\n{proxy.stderr[-3000:]}"
    assert p.returncode == 0, diag
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out.get("is_error") is False, diag
    return out


class TestProvidersClaudeCode:
    @pytest.fixture
    def claude(self) -> str:
        b = claude_bin()
        require_e2e(f"the Claude Code CLI {CLAUDE_VERSION}", b is not None)
        return b

    def test_bash_round_trip_through_openai_preset(self, claude, pv_stacks, tmp_path):
        st_ = pv_stacks("openai")

        def respond(rec: Recorded) -> Reply:
            results = [m["content"] for m in rec.body["messages"] if m["role"] == "tool"]
            if results:
                return pv_oai_reply(rec, f"The command printed: {result_text(results[-1]).strip()}")
            return pv_oai_reply(rec, "Let me run that.", finish="tool_calls", tools=[
                ("call_cc_1", "Bash", {"command": "echo hello-from-tool", "description": "Print a marker"})])

        st_.fake.push(respond, respond)
        out = pv_claude(claude, st_.proxy, tmp_path, "run echo hello-from-tool")
        assert out["num_turns"] == 2 and out["result"] == "The command printed: hello-from-tool", out
        assert len(st_.fake.requests) == 2
        for q in st_.fake.requests:
            assert q.path == "/v1/chat/completions" and q.body["model"] == "gpt-5" and q.body["stream"] is True
            assert "max_tokens" not in q.body and q.body.get("max_completion_tokens")
        tool_msgs = [m for m in st_.fake.last.body["messages"] if m["role"] == "tool"]
        assert tool_msgs and tool_msgs[-1]["content"].strip() == "hello-from-tool", tool_msgs
        pv_no_leak(st_.fake)

    def test_model_flag_picks_the_provider(self, claude, routes, tmp_path):
        out = pv_claude(claude, routes.proxy, tmp_path, "say hello", model=f"{PV_AN},claude-opus-4-1")
        assert out["result"] == routes.an.hello and out["num_turns"] == 1, out
        assert len(routes.an.requests) == 1 and routes.oa.requests == [] and routes.lo.requests == []
        assert routes.an.last.body["model"] == "claude-opus-4-1"
        out = pv_claude(claude, routes.proxy, tmp_path, "say hello", model=f"{PV_OA},gpt-4.1")
        assert out["result"] == routes.oa.hello, out
        assert len(routes.oa.requests) == 1 and routes.oa.last.body["model"] == "gpt-4.1"
        pv_no_leak(*routes.fakes)

    def test_real_tool_schemas_reach_gemini_cleaned(self, claude, pv_stacks, tmp_path):
        """Claude Code's own default tool set (its real JSON schemas) through the gemini preset's strict fake."""
        st_ = pv_stacks("gemini")
        out = pv_claude(claude, st_.proxy, tmp_path, "say hello", tools=None)
        assert out["result"] == st_.fake.hello and out["num_turns"] == 1, out
        b = st_.fake.last.body
        params = {dig(t, "function.name"): dig(t, "function.parameters") for t in b["tools"]}
        assert {"Bash", "Read", "Edit"} <= set(params), sorted(params)  # --bare's default set
        assert all(gemini_schema_problems(v) == [] for v in params.values())
        assert "command" in params["Bash"]["properties"] and "command" in params["Bash"]["required"], params["Bash"]
        pv_no_leak(st_.fake)

    def test_bash_round_trip_through_anthropic_preset(self, claude, pv_stacks, tmp_path):
        st_ = pv_stacks("anthropic")
        responder = az_tool_turns("Bash", {"command": "echo hello-from-tool", "description": "Print a marker"},
                                  lambda out: f"The command printed: {out.strip()}")
        st_.fake.push(responder, responder)
        out = pv_claude(claude, st_.proxy, tmp_path, "run echo hello-from-tool")
        assert out["num_turns"] == 2 and out["result"] == "The command printed: hello-from-tool", out
        assert [q.headers.get("x-api-key") for q in st_.fake.requests] == [ANTH_KEY, ANTH_KEY]
        assert "hello-from-tool" in json.dumps(st_.fake.last.body["messages"][-1])
        pv_no_leak(st_.fake)

    def test_haiku_model_goes_to_the_background_route(self, claude, routes, tmp_path):
        """claude-haiku-4-5 comes with thinking enabled: background beats think; Bash round trip through Ollama."""
        def respond(rec: Recorded) -> Reply:
            results = [m["content"] for m in rec.body["messages"] if m["role"] == "tool"]
            if results:
                return pv_oai_reply(rec, f"The command printed: {result_text(results[-1]).strip()}")
            return pv_oai_reply(rec, None, finish="tool_calls", tools=[
                ("call_bg_1", "Bash", {"command": "echo hello-from-tool", "description": "Print a marker"})])

        routes.lo.push(respond, respond)
        out = pv_claude(claude, routes.proxy, tmp_path, "run echo hello-from-tool", model="claude-haiku-4-5")
        assert out["num_turns"] == 2 and out["result"] == "The command printed: hello-from-tool", out
        assert len(routes.lo.requests) == 2 and routes.oa.requests == [] and routes.an.requests == []
        assert all(q.body["model"] == "qwen2.5-coder:7b" for q in routes.lo.requests)
        assert routes.lo.requests[0].body.get("thinking") is None
