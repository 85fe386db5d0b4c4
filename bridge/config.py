"""Confide's settings: environment variables with prefix CONFIDE_, nested with `__`, and `.env`.

Every setting has a default that runs on a fresh machine: embedded Qdrant on disk, the packaged
MiniLM embedder and, when no model endpoint is configured, a local llama.cpp server. Each platform brings
its own section (bridge.intake.platforms); `load_settings()` builds the class that holds them all.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, SecretStr, ValidationError, create_model, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bridge.intake.platforms import channels, normalize_account, platforms


class ModelSettings(BaseModel):
    """One OpenAI-compatible chat endpoint (vLLM in production)."""

    base_url: str = Field(description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    replicas: list[str] = Field(
        default_factory=list,
        description="More base URLs serving the same model (vLLM replicas): each request goes to the replica with "
        "the fewest outstanding requests, and one whose circuit is open gets none",
    )
    model: str = Field(description="Model id the server knows, e.g. Qwen/Qwen2.5-7B-Instruct")
    api_key: SecretStr = SecretStr("none")
    concurrency: int = Field(8, ge=1, le=1024, description="Requests in flight to each replica of this model at once")
    timeout_s: float = Field(120.0, gt=0, description="Whole-request timeout")
    connect_timeout_s: float = Field(5.0, gt=0)
    retries: int = Field(2, ge=0, le=10, description="Retries on 429/5xx/connection errors")
    max_tokens: int = Field(512, ge=1)
    temperature: float = Field(0.2, ge=0, le=2)
    gpus: list[int] = Field(
        default_factory=list, description="NVML/DCGM indices of the GPUs serving this model, for energy per answer"
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _http_base(value)

    @field_validator("replicas")
    @classmethod
    def _http_urls(cls, values: list[str]) -> list[str]:
        return [_http_base(value) for value in values]

    @property
    def base_urls(self) -> list[str]:
        """Every replica's base URL, the first one first, each once."""
        return list(dict.fromkeys([self.base_url, *self.replicas]))


def _http_base(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/")


class LocalModelSettings(BaseModel):
    """The embedded llama.cpp server, used only when no model endpoint is configured.

    The defaults fit a 2-core machine without a GPU serving the 1.5B default model: a context that holds the
    prompt (instructions, 6 recent turns, 8 excerpts) with the answer, and a start-up timeout for a cold disk,
    so that the first answer on a fresh install arrives instead of timing out.
    """

    enabled: bool = True
    gguf_path: Path | None = Field(
        None, description="GGUF file; default: what scripts/install.sh installed (Qwen2.5-Coder-1.5B, else SmolLM2)"
    )
    port: int = Field(0, ge=0, le=65535, description="0 picks a free loopback port")
    context: int = Field(8192, ge=512, description="tokens of prompt and answer together")
    threads: int = Field(0, ge=0, description="0: half the usable CPUs to generate, all of them to read the prompt")
    concurrency: int = Field(1, ge=1)
    max_tokens: int = Field(256, ge=1)
    startup_timeout_s: float = Field(180.0, gt=0, description="loading the model from a cold disk")


class EmbedderSettings(BaseModel):
    backend: Literal["local", "openai"] = "local"
    model_path: Path | None = Field(
        None, description="sentence-transformers folder (its onnx/model.onnx is used if present); default: packaged"
    )
    base_url: str | None = Field(None, description="OpenAI-compatible /v1 base for backend=openai")
    model: str = "all-MiniLM-L6-v2"
    packaged: Literal["minilm+multilingual-use", "multilingual-use", "minilm"] = Field(
        "minilm+multilingual-use",
        description="backend=local without model_path: the packaged model: all-MiniLM-L6-v2 (English) paired with "
        "the multilingual USE (Italian, German, French, Spanish, Dutch... in one space), either alone",
    )
    api_key: SecretStr = SecretStr("none")
    batch_size: int = Field(64, ge=1, le=4096)
    dimension: int | None = Field(None, ge=1, description="Needed for backend=openai if not 384")
    concurrency: int = Field(4, ge=1, le=256, description="backend=openai: batches in flight to the endpoint at once")
    timeout_s: float = Field(60.0, gt=0, description="backend=openai: one batch's whole request")
    retries: int = Field(2, ge=0, le=10, description="backend=openai: retries of a batch on 429/5xx/connection errors")

    @model_validator(mode="after")
    def _endpoint_for_openai(self) -> EmbedderSettings:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("base_url is required when backend is 'openai'")
        return self


class TranscriberSettings(BaseModel):
    """Voice notes into text. No Whisper weights can be installed offline from the package registries (checked:
    see the README), so there is no `local` backend: `openai` calls an OpenAI-compatible
    /v1/audio/transcriptions (vLLM serving a Whisper model on the GPU host), `none` leaves voice notes as
    "sent a voice message" records."""

    backend: Literal["none", "openai"] = "none"
    base_url: str | None = Field(None, description="OpenAI-compatible /v1 base for backend=openai")
    model: str = "openai/whisper-large-v3"
    api_key: SecretStr = SecretStr("none")
    language: str | None = Field(None, description="ISO-639-1 code of the speech; empty: the model detects it")
    max_audio_bytes: int = Field(25 * 1024 * 1024, ge=1, description="Larger voice notes are not transcribed")
    timeout_s: float = Field(300.0, gt=0)

    @model_validator(mode="after")
    def _endpoint_for_openai(self) -> TranscriberSettings:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("base_url is required when backend is 'openai'")
        return self


class StoreSettings(BaseModel):
    backend: Literal["embedded", "server"] = "embedded"
    path: Path | None = Field(None, description="Embedded shard folder; default DATA_DIR/qdrant")
    url: str | None = Field(None, description="Qdrant server URL for backend=server")
    api_key: SecretStr | None = None
    collection: str = "confide_history"
    # A Qdrant cluster (backend=server). Each applies when Confide creates the collection (a collection that exists
    # keeps its layout: Qdrant changes it with its own API), None leaves Qdrant's default. See README, "Qdrant as a
    # cluster", for Qdrant's guidance on each.
    shard_number: int | None = Field(None, ge=1, description="Shards of the collection (a few per node)")
    replication_factor: int | None = Field(None, ge=1, description="Copies of each shard on different nodes")
    write_consistency_factor: int | None = Field(
        None, ge=1, description="Replicas that must confirm a write before it succeeds (at most replication_factor)"
    )
    on_disk_vectors: bool = Field(False, description="Keep the original dense vectors on disk (memory-mapped)")
    on_disk_payload: bool = Field(True, description="Keep payloads on disk, indexed fields in memory")
    quantization: Literal["none", "int8"] = Field(
        "none", description="int8 scalar quantization of the dense vectors, in memory, searched with rescoring"
    )
    oversampling: float = Field(2.0, ge=1.0, description="quantization=int8: candidates fetched per result, rescored")
    tenant_graphs: bool = Field(
        False,
        description="One HNSW graph per person (payload_m) and none over everyone (m=0): Qdrant's multitenancy advice "
        "for many persons; every search of Confide names its person",
    )
    payload_m: int = Field(16, ge=4, le=128, description="tenant_graphs: edges per node of each person's graph")
    prefer_grpc: bool = Field(False, description="Talk to Qdrant over gRPC (grpc_port) instead of REST")
    grpc_port: int = Field(6334, ge=1, le=65535)
    timeout_s: float = Field(30.0, gt=0, description="One request to Qdrant")
    retries: int = Field(3, ge=0, le=10, description="Retries with back-off on timeouts, 429/5xx and lost connections")

    @model_validator(mode="after")
    def _url_for_server(self) -> StoreSettings:
        if self.backend == "server" and not self.url:
            raise ValueError("url is required when backend is 'server'")
        if self.write_consistency_factor and self.write_consistency_factor > (self.replication_factor or 1):
            raise ValueError("write_consistency_factor cannot exceed replication_factor")
        return self


class PersonSettings(BaseModel):
    """A person and the platform accounts that are theirs ("channel:address")."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    name: str = ""
    accounts: list[str] = Field(min_length=1)
    language: Literal["en", "it", "de", "fr", "es", "nl"] | None = Field(
        None,
        description="The language Confide replies in where a message's own cannot be told (a question in another "
        "language is answered in that one); unset: the language the person last wrote in, else English",
    )
    time_zone: str | None = Field(
        None,
        description="The person's IANA time zone (Europe/Rome): the dates of the excerpts an answer reads, and "
        "today's, are given to the model in it; unset: UTC",
    )

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, zone: str | None) -> str | None:
        if zone is not None:
            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {zone!r}: give an IANA name such as Europe/Rome") from exc
        return zone

    @field_validator("accounts")
    @classmethod
    def _valid_accounts(cls, accounts: list[str]) -> list[str]:
        known = channels()
        for account in accounts:
            channel, _, address = account.partition(":")
            if channel not in known or not address:
                raise ValueError(f"account {account!r} must look like 'channel:address' with channel in {known}")
        return [normalize_account(a) for a in accounts]


class RetrievalSettings(BaseModel):
    limit: int = Field(8, ge=1, le=100, description="History pieces given to the model")
    candidates: int = Field(50, ge=1, le=1000, description="Dense and sparse candidates before fusion")
    rrf_k: int = Field(10, ge=1, description="Reciprocal-rank-fusion constant (10 measured best on LoCoMo)")
    min_relevance: float | None = Field(
        None,
        ge=0,
        le=1,
        description=(
            "Least cosine similarity between the whole question and its best excerpt for the model to be asked; "
            "below it Confide says nothing was found. 0 turns the gate off. Unset: the value calibrated for the "
            "embedder by benchmarks/abstain.py (bridge/models/embedder.py CALIBRATED_GATES); another embedder "
            "needs its own"
        ),
    )


class EnergySettings(BaseModel):
    """Where the energy of an answer is read: NVML on this host, or a Prometheus endpoint (DCGM exporter)."""

    source: Literal["none", "nvml", "prometheus"] = "none"
    prometheus_url: str | None = Field(None, description="Metrics endpoint, e.g. http://127.0.0.1:9400/metrics")
    prometheus_mode: Literal["energy", "power"] = Field(
        "energy", description="energy: a counter in mJ read before and after; power: watts sampled and integrated"
    )
    energy_metric: str = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
    power_metric: str = "DCGM_FI_DEV_POWER_USAGE"
    gpu_label: str = Field("gpu", description="Label that carries the GPU index in the exposition")
    interval_s: float = Field(1.0, ge=0.05, le=60, description="Sampling interval while answers run")
    timeout_s: float = Field(2.0, gt=0, le=30, description="Timeout of one Prometheus scrape")

    @model_validator(mode="after")
    def _url_for_prometheus(self) -> EnergySettings:
        if self.source == "prometheus" and not self.prometheus_url:
            raise ValueError("prometheus_url is required when source is 'prometheus'")
        if self.prometheus_url and not self.prometheus_url.startswith(("http://", "https://")):
            raise ValueError("prometheus_url must start with http:// or https://")
        return self


class MetricsSettings(BaseModel):
    port: int = Field(0, ge=0, le=65535, description="Loopback port of Confide's own /metrics; 0: off")
    token: SecretStr | None = Field(
        None,
        description="Bearer token every request to /metrics, /healthz and /readyz must carry (Authorization: Bearer "
        "...); unset: any local user may read them",
    )


MiB = 1024 * 1024


class ImportSettings(BaseSettings):
    """Bounds on what one import reads, so that a hostile or broken export costs a reported problem, never the
    process: each is checked as the bytes are read (decompressed sizes are counted, since zip headers lie).

    The `imports` section of `Settings` (CONFIDE_IMPORTS__*), passed to each importer by its caller
    (bridge/history/imports.py); an importer never reads the environment itself. The defaults are far above real
    exports: WhatsApp caps a message at 65,536 characters and an export at 40,000 messages, Telegram a message
    at 4,096.
    """

    model_config = SettingsConfigDict(
        env_prefix="CONFIDE_IMPORTS__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        env_ignore_empty=True,
    )

    max_file_bytes: int = Field(
        512 * MiB, ge=1024, description="Bytes read whole from one file (a Telegram result.json, a document)"
    )
    max_mail_bytes: int = Field(64 * MiB, ge=1024, description="Bytes of one mail in an mbox or Maildir")
    max_member_bytes: int = Field(
        32 * MiB, ge=1024, description="Bytes decompressed from one zip member (a WhatsApp chat's text, a .docx part)"
    )
    max_archive_bytes: int = Field(128 * MiB, ge=1024, description="Bytes decompressed from one .docx in all")
    max_compression_ratio: int = Field(
        100,
        ge=2,
        description="Times its compressed size a zip member may inflate to, past its first MiB: text deflates 3 to 10 "
        "times, a zip bomb a thousand",
    )
    max_json_depth: int = Field(64, ge=8, le=500, description="Nesting of a JSON export (Telegram's is 6 deep)")
    max_message_chars: int = Field(
        1_000_000, ge=1000, description="Characters of one chat message or mail body; the rest is cut, reported"
    )
    max_text_chars: int = Field(
        10_000_000, ge=1000, description="Characters of one document or attachment; the rest is cut, reported"
    )
    # One mail's bounds, for mail imported and mail received alike (adapters/email reads them here).
    max_mime_parts: int = Field(500, ge=1, description="MIME parts of one mail; a mail with more is skipped")
    max_mail_header_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=1024 * 1024,  # a received mail is judged on its first MiB, which must hold its whole header
        description="Header bytes of one mail",
    )
    max_attachment_bytes: int = Field(32 * MiB, ge=1024, description="Decoded bytes of one mail attachment")
    max_pdf_pages: int = Field(2000, ge=1, description="Pages read of one PDF; later pages are cut, reported")
    max_document_seconds: float = Field(
        20.0, gt=0, description="Reading time of one document or attachment; the text so far is kept, reported"
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CONFIDE_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        env_ignore_empty=True,
    )

    data_dir: Path = Field(Path("~/.local/share/confide"), description="State database and embedded index")
    state_url: SecretStr | None = Field(
        None,
        description="PostgreSQL for the state (inbox, outbox, chats, usage, platforms' tables), as a libpq URL "
        "postgresql://user:password@host:5432/dbname; unset: SQLite in the data directory",
    )
    state_pool_size: int = Field(8, ge=1, le=256, description="PostgreSQL connections of one process")
    role: Literal["all", "gateway", "worker"] = Field(
        "all",
        description="What `confide serve` does (bridge/dispatch/roles.py): all; gateway (platform connections: intake "
        "and delivery, one per account); worker (answers, no connection; as many as the models feed). Several "
        "processes need the state on PostgreSQL",
    )
    lease_s: float = Field(
        30.0,
        ge=1,
        le=3600,
        description="How long a taken message stays with its process without a renewal (renewed every third of it): "
        "on PostgreSQL, how soon another process takes over the messages of one that died",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Non-private hosts Confide may contact (comma-separated)"
    )
    proxy_url: str | None = Field(
        None,
        description="HTTP proxy for every HTTP client (judged and listed like every endpoint); proxy environment "
        "variables are ignored",
    )
    persons: list[PersonSettings] = Field(
        default_factory=lambda: [PersonSettings(id="me", name="Me", accounts=["console:me"])]
    )
    models: dict[str, ModelSettings] = Field(default_factory=dict)
    default_model: str | None = None
    local_model: LocalModelSettings = LocalModelSettings()
    embedder: EmbedderSettings = EmbedderSettings()
    transcriber: TranscriberSettings = TranscriberSettings()
    store: StoreSettings = StoreSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    energy: EnergySettings = EnergySettings()
    metrics: MetricsSettings = MetricsSettings()
    imports: ImportSettings = Field(default_factory=ImportSettings)
    index_conversations: bool = Field(True, description="Add each question asked to the history (never answers)")
    recent_turns: int = Field(6, ge=0, le=50, description="Chat turns replayed to the model")
    model_wait_s: float = Field(
        300.0, ge=0, description="How long a question waits for a model that is down before the labelled fallback"
    )
    shutdown_grace_s: float = Field(
        20.0, ge=0, description="On SIGTERM/SIGINT: how long answers in flight may finish and queued replies go out"
    )
    min_free_mb: int = Field(
        96,
        ge=1,
        description="Free space (MB) the data directory's disk must keep: below it no message is taken (SMTP 452, "
        "Telegram and Matrix not fetched) and Confide does not start. The embedded index writes its log in 32 MiB "
        "pieces of memory-mapped files, which a full disk turns into a crash (SIGBUS)",
    )

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip().lower() for h in value.split(",") if h.strip()]
        return value

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.default_model and self.models and self.default_model not in self.models:
            raise ValueError(f"default_model {self.default_model!r} is not one of models: {sorted(self.models)}")
        if not self.models and not self.local_model.enabled:
            raise ValueError("no model configured: set CONFIDE_MODELS or enable CONFIDE_LOCAL_MODEL__ENABLED")
        seen: dict[str, str] = {}
        for person in self.persons:
            for account in person.accounts:
                if account in seen and seen[account] != person.id:
                    raise ValueError(f"account {account!r} belongs to both {seen[account]!r} and {person.id!r}")
                seen[account] = person.id
        return self

    @property
    def state_path(self) -> Path:
        return self.data_dir / "state.sqlite3"

    @field_validator("state_url")
    @classmethod
    def _postgresql_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a URL starting with postgresql://")
        return value

    @property
    def shard_path(self) -> Path:
        return self.store.path or self.data_dir / "qdrant"


class ConfigError(Exception):
    """An invalid setting, phrased for the operator: which variable, and why."""


@cache
def settings_class() -> type[Settings]:
    """`Settings` with a section for each installed platform (`CONFIDE_TELEGRAM__TOKEN` -> `.telegram.token`)."""
    sections: dict[str, Any] = {
        name: (platform.settings, Field(default_factory=platform.settings)) for name, platform in platforms().items()
    }
    return create_model("Settings", __base__=Settings, **sections)


def load_settings(**overrides: Any) -> Settings:
    try:
        return settings_class()(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    lines = ["Invalid configuration:"]
    for error in exc.errors():
        path = [str(p) for p in error["loc"]]
        name = "CONFIDE_" + "__".join(p.upper() for p in path) if path else "CONFIDE_*"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"  {name}: {message} (got {error.get('input')!r:.80})")
    return "\n".join(lines)
