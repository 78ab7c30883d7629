"""Pool and runtime configuration, loaded from TOML.

```toml
namespace = "heterarch"           # optional
nats = ["nats://127.0.0.1:4222"]  # optional; default: local server or embedded

[pools.cpu]
hardware = "cpu"
capacity = 64                      # live actors one worker of this pool hosts at once
modules = ["examples.pools"]       # the only modules whose actor classes it instantiates

[pools.frontier]
hardware = "api"
model = "openai/frontier-large"    # a litellm model string
api_base = "http://127.0.0.1:8700/v1"
api_key_env = "OPENAI_API_KEY"
input_price_per_mtok = 3.0
output_price_per_mtok = 15.0
max_concurrency = 64               # model calls in flight per worker
client = "auto"                    # "auto": the lean HTTP client for an openai/ model with an
                                   # api_base, litellm otherwise; "litellm" forces litellm
tier = 3                           # capability tier the router may rely on (higher is stronger)
modalities = ["text", "image"]     # what its model reads (default: text only)

[connect]                          # optional: how to authenticate with NATS
user = "alice"                     # or in the URL
password_env = "NATS_PASSWORD"     # the NAME of the variable that holds it (never the secret)
creds_file = "alice.creds"         # or token_env, nkeys_seed, tls_ca_file/tls_cert_file/...

[sandbox]                          # optional (or `sandbox = "process"`: trusted code only)
kind = "docker"
memory = "2g"                      # per REPL container (default "512m")
cpus = 2.0
pids = 128
runtime = "runsc"                  # a Docker runtime (gVisor where installed; default: Docker's)

[[rules]]                          # optional static placement, tried before the router
depth = 0                          # the root agent ...
kind = "rlm"                       # ... (a recursive agent; "llm": a plain completion)
pool = "frontier"                  # ... runs on frontier
```
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from .errors import RuntimeConfigError

if TYPE_CHECKING:
    from transports import ConnectOptions

MODALITIES = {"text", "image"}
_POOL_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


class PoolConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One worker pool: a kind of hardware, optionally serving one model."""

    name: str
    hardware: str = "cpu"
    capacity: int = 64
    modules: list[str] = []
    # Model fields (the LLM client reads these; empty model = a pool without a model).
    model: str = ""
    api_base: str = ""
    api_key_env: str = ""
    input_price_per_mtok: float | None = None
    output_price_per_mtok: float | None = None
    max_concurrency: int = 16
    tier: int = 1
    timeout_s: float = 60.0
    max_retries: int = 3
    description: str = ""
    modalities: list[str] = msgspec.field(default_factory=lambda: ["text"])  # "image" too: the
    # router may send it image_url content parts
    # What an image model reads: the text height (in the pixels it sees, after its provider's
    # resize) it reads reliably (0: not said), and that resize: "openai-tiles", "qwen-patches"
    # or "" (keeps the resolution). The router sends a call that says how small its text is
    # (``text_px``) only to pools that read it.
    legible_px: float = 0.0
    image_resize: str = ""
    client: str = "auto"  # "auto", "litellm" or "openai" (the lean OpenAI-compatible client)
    # Root actors one spawning node may hold on one worker of this pool (0: no limit), so that
    # one client cannot fill every slot with roots; children of actors do not count.
    roots_per_client: int = 0
    # The model's context window in tokens (prompt and answer together): 0 takes litellm's
    # model map where it knows the model, else the window is unknown (no check). The router
    # sends a prompt only to pools it fits; the RLM's system prompt names these windows.
    context_window: int = 0
    # Dollars per million input tokens the provider reads from its prompt cache
    # (``usage.prompt_tokens_details.cached_tokens``); None: litellm's map, else the input price.
    cached_input_price_per_mtok: float | None = None
    # The total deadline of one streamed attempt (``timeout_s`` bounds the wait for its first
    # chunk and between two chunks; a non-streamed attempt has ``timeout_s`` in all).
    stream_timeout_s: float = 600.0
    # Send OpenAI's ``prompt_cache_key`` (a hash of the prompt's first 1,024 tokens) with
    # prompts at least that long, so that calls sharing a long prefix reach the replica that
    # has it cached (the provider spills to another when that one is busy). Off by default:
    # a strict server may refuse a parameter it does not know.
    prompt_cache_key: bool = False

    def __post_init__(self) -> None:
        if not self.name or not set(self.name) <= _POOL_NAME_CHARS:
            raise RuntimeConfigError(
                f"pool name {self.name!r} must be non-empty letters, digits, '-' or '_'"
            )
        if self.capacity < 1:
            raise RuntimeConfigError(f"pool {self.name!r}: capacity must be >= 1")
        if self.roots_per_client < 0:
            raise RuntimeConfigError(f"pool {self.name!r}: roots_per_client must be >= 0")
        if self.max_concurrency < 1:
            raise RuntimeConfigError(f"pool {self.name!r}: max_concurrency must be >= 1")
        unknown = set(self.modalities) - MODALITIES
        if unknown or "text" not in self.modalities:
            raise RuntimeConfigError(
                f"pool {self.name!r}: modalities must include \"text\" and be among "
                f"{sorted(MODALITIES)}, not {self.modalities}"
            )
        if self.image_resize not in ("", "openai-tiles", "qwen-patches"):
            raise RuntimeConfigError(
                f"pool {self.name!r}: image_resize must be '', 'openai-tiles' or "
                f"'qwen-patches', not {self.image_resize!r}"
            )
        if self.legible_px < 0:
            raise RuntimeConfigError(f"pool {self.name!r}: legible_px must be >= 0")
        if self.client not in ("auto", "litellm", "openai"):
            raise RuntimeConfigError(
                f"pool {self.name!r}: client must be 'auto', 'litellm' or 'openai', "
                f"not {self.client!r}"
            )
        if self.client == "openai" and self.model and not self.api_base:
            raise RuntimeConfigError(
                f"pool {self.name!r}: client = 'openai' needs an api_base (the server's /v1 URL)"
            )
        if self.context_window < 0:
            raise RuntimeConfigError(f"pool {self.name!r}: context_window must be >= 0")
        if self.timeout_s <= 0 or self.stream_timeout_s <= 0:
            raise RuntimeConfigError(f"pool {self.name!r}: timeouts must be > 0")
        for price in (self.input_price_per_mtok, self.output_price_per_mtok,
                      self.cached_input_price_per_mtok):
            if price is not None and price < 0:
                raise RuntimeConfigError(f"pool {self.name!r}: prices must be >= 0")


class ConnectConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How to authenticate with NATS (``[connect]``). Secrets are named by environment
    variable (``password_env``, ``token_env``), never written in the file."""

    user: str = ""
    password_env: str = ""
    token_env: str = ""
    creds_file: str = ""
    nkeys_seed: str = ""
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""


class SandboxConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The REPL sandboxes of RLM agents (``[sandbox]``): backend and Docker limits."""

    kind: str = "docker"  # or "process" (trusted code only: no isolation)
    memory: str = "512m"
    cpus: float = 1.0
    pids: int = 64
    runtime: str = ""  # a Docker runtime, e.g. "runsc" (gVisor); "": Docker's default
    image: str = ""  # "": the locally built heterarch sandbox image

    def __post_init__(self) -> None:
        if self.kind not in ("docker", "process"):
            raise RuntimeConfigError(
                f"[sandbox] kind must be 'docker' or 'process', not {self.kind!r}")
        if self.cpus <= 0 or self.pids < 1:
            raise RuntimeConfigError("[sandbox] cpus must be > 0 and pids >= 1")


class RuleConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A static placement rule (``[[rules]]``): calls that match go to ``pool``. Empty or
    negative fields match anything; ``depth`` 0 is the root agent, 1 its sub-calls..."""

    pool: str
    depth: int = -1
    kind: str = ""  # "llm" (a plain completion) or "rlm" (a recursive agent)
    tag: str = ""
    pattern: str = ""


class RoutingConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[routing]``: the quality target and the router that learns it from content.

    ``quality_target``: the predicted agreement with the strongest pool every plain sub-call
    must reach (0: match the strongest, within ``tolerance``); ``model``: a content router
    model (``heterarch route fit --labels``); ``labels``: a JSON-lines file the shadow labels
    are appended to (and learnt from at start); ``shadow_fraction``: the share of sub-calls
    also run on the other side (cheap vs strongest) to label them; ``refit_every``: new
    labels before the model is fitted again (0: never online)."""

    quality_target: float = 0.0
    tolerance: float = 0.01
    model: str = ""
    labels: str = ""
    shadow_fraction: float = 0.03
    refit_every: int = 500


class RuntimeConfig(msgspec.Struct, frozen=True, kw_only=True):
    namespace: str = "heterarch"
    nats: list[str] = []
    pools: dict[str, PoolConfig] = {}
    sandbox: str = "docker"  # or "process" (trusted code only: no isolation)
    connect: ConnectConfig = ConnectConfig()
    sandbox_settings: SandboxConfig = SandboxConfig()  # ``[sandbox]``; its kind is ``sandbox``
    rules: list[RuleConfig] = []
    routing: RoutingConfig | None = None  # None: no [routing] table, no learning router

    def connect_options(self, servers: list[str] | None = None) -> ConnectOptions:
        """``ConnectOptions`` for ``servers`` (default: the config's URLs) with the
        ``[connect]`` credentials (secrets read from the variables it names)."""
        from transports import ConnectOptions

        c = self.connect

        def secret(name: str) -> str | None:
            if not name:
                return None
            value = os.environ.get(name)
            if value is None:
                raise RuntimeConfigError(
                    f"[connect] names the variable {name!r}, which is not set")
            return value

        fields: dict[str, Any] = {
            "user": c.user or None, "password": secret(c.password_env),
            "token": secret(c.token_env), "creds_file": c.creds_file or None,
            "nkeys_seed": c.nkeys_seed or None, "tls_ca_file": c.tls_ca_file or None,
            "tls_cert_file": c.tls_cert_file or None, "tls_key_file": c.tls_key_file or None,
        }
        urls = servers if servers is not None else self.nats
        if urls:
            fields["servers"] = list(urls)
        return ConnectOptions(**{k: v for k, v in fields.items() if v is not None})

    def pool(self, name: str) -> PoolConfig:
        try:
            return self.pools[name]
        except KeyError:
            known = ", ".join(sorted(self.pools)) or "none"
            raise RuntimeConfigError(
                f"pool {name!r} is not in the config (pools: {known})"
            ) from None


def parse_config(data: dict[str, Any], *, source: str = "<config>") -> RuntimeConfig:
    """Validate a decoded TOML document. Raises ``RuntimeConfigError`` naming the problem."""
    if not isinstance(data, dict):
        raise RuntimeConfigError(f"{source}: expected a table at the top level")
    raw_pools = data.get("pools", {})
    if not isinstance(raw_pools, dict):
        raise RuntimeConfigError(f"{source}: [pools] must be a table of tables")
    pools: dict[str, PoolConfig] = {}
    for name, table in raw_pools.items():
        if not isinstance(table, dict):
            raise RuntimeConfigError(f"{source}: [pools.{name}] must be a table")
        try:
            pools[name] = msgspec.convert({**table, "name": name}, PoolConfig)
        except msgspec.ValidationError as exc:
            raise RuntimeConfigError(f"{source}: [pools.{name}]: {exc}") from None
    rest = {k: v for k, v in data.items() if k != "pools"}
    unknown = set(rest) - {"namespace", "nats", "sandbox", "connect", "rules", "routing"}
    if unknown:
        raise RuntimeConfigError(
            f"{source}: unknown top-level keys {sorted(unknown)} "
            "(known: namespace, nats, sandbox, connect, rules, pools, routing)"
        )
    nats = rest.get("nats", [])
    if isinstance(nats, str):
        rest["nats"] = [u for u in nats.split(",") if u.strip()]
    sandbox = rest.get("sandbox")
    if isinstance(sandbox, dict):  # [sandbox] table: its kind is the `sandbox` string
        rest["sandbox_settings"] = sandbox
        rest["sandbox"] = sandbox.get("kind", "docker")
    elif sandbox is not None:
        rest["sandbox_settings"] = {"kind": sandbox}
    try:
        config = msgspec.convert({**rest, "pools": {}}, RuntimeConfig).__replace__(pools=pools)
    except msgspec.ValidationError as exc:
        raise RuntimeConfigError(f"{source}: {exc}") from None
    except RuntimeConfigError as exc:
        raise RuntimeConfigError(f"{source}: {exc}") from None
    for rule in config.rules:
        if rule.pool not in pools:
            raise RuntimeConfigError(
                f"{source}: [[rules]] names pool {rule.pool!r}, which is not in [pools] "
                f"({', '.join(sorted(pools)) or 'none'})")
    return config


def load_config(path: str | Path) -> RuntimeConfig:
    """Read a TOML config file. Raises ``RuntimeConfigError`` with the file and the problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RuntimeConfigError(f"config file {str(p)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RuntimeConfigError(f"cannot read config file {str(p)!r}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuntimeConfigError(f"{p}: not valid TOML: {exc}") from None
    return parse_config(data, source=str(p))
