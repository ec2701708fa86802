"""Configuration: a TOML file (optional), overridden key by key from ``QUNBOT_*`` environment variables.

Every key lives in a section; its environment name is ``QUNBOT_<SECTION>_<KEY>`` in upper case, e.g.
``database.url`` → ``QUNBOT_DATABASE_URL``. Secrets are accepted from the environment only, so a config
file that is committed or shared can never carry them.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
)

ENV_PREFIX = "QUNBOT_"


class ConfigError(Exception):
    """An invalid configuration; the message names the offending key."""


class _Section(BaseModel):
    # inf/nan would make a duration or lease endless.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    # Graceful shutdown budget for in-flight requests and background work.
    shutdown_timeout_seconds: float = Field(10.0, gt=0)


class DatabaseConfig(_Section):
    url: str = "sqlite:///./data/qunbot.db"
    # Apply migrations on `qunbot run`; on by default for the embedded SQLite only.
    auto_migrate: bool | None = None
    pool_size: int = Field(10, ge=1, le=200)
    echo: bool = False

    @field_validator("url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        scheme = value.split(":", 1)[0] if ":" in value else ""
        if scheme.split("+", 1)[0] not in ("sqlite", "postgresql", "postgres"):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return value


class LogConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class SimulatorConfig(_Section):
    enabled: bool = True
    demo_group: str = "g1"
    demo_group_name: str = "演示群"


class InboxConfig(_Section):
    # A claimed event whose worker vanished is retried after this lease.
    lease_seconds: float = Field(60.0, gt=0)
    max_attempts: int = Field(5, ge=1)
    # Group commit: at most this many accepted events (or done marks) are written in one statement.
    batch_max: int = Field(256, ge=1, le=1000)
    # Events processed concurrently in the background.
    workers: int = Field(32, ge=1, le=1024)


class WelcomeConfig(_Section):
    enabled: bool = True
    # Placeholders: {names} {group_name} {member_count} {rules} {count}
    template: str = ""
    rules: str = ""
    # For platforms that send the welcome themselves (WeCom customer groups); %NICKNAME% is the newcomer.
    platform_template: str = ""
    # Joins arriving within this window are merged into one welcome.
    merge_window_seconds: float = Field(2.0, ge=0, le=60)


def _url_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must start with /")
    return value


def _aes_key(value: str, where: str) -> str:
    """A callback EncodingAESKey (WeCom's doors share the scheme); empty means not configured."""
    if value and len(value) != 43:
        raise ValueError(f"must be the 43-character EncodingAESKey from {where}")
    return value


def _callback_token(value: str) -> str:
    if len(value) > 32:
        raise ValueError("must be at most 32 characters")
    return value


class WeComConfig(_Section):
    enabled: bool = False
    corp_id: str = ""
    agent_id: int | None = None
    callback_path: str = "/wecom/callback"
    api_base_url: str = "https://qyapi.weixin.qq.com"
    # Reject callbacks whose timestamp is further than this from now (0 disables the check).
    replay_window_seconds: int = Field(600, ge=0)
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    # A request body must arrive completely within this many seconds.
    body_timeout_seconds: float = Field(5.0, gt=0)
    # Keep the customer-group welcome template (group_welcome_template) in sync with the welcome text.
    sync_welcome_template: bool = True
    # Fetch groupchat/get on joins to record names, join scene and inviter.
    enrich_members: bool = True
    # Secrets: environment only (QUNBOT_WECOM_TOKEN, QUNBOT_WECOM_ENCODING_AES_KEY, QUNBOT_WECOM_CORP_SECRET).
    token: str = Field("", repr=False)
    encoding_aes_key: str = Field("", repr=False)
    corp_secret: str = Field("", repr=False)

    _path = field_validator("callback_path")(lambda value: _url_path(value))
    _aes_key = field_validator("encoding_aes_key")(lambda value: _aes_key(value, "the WeCom admin console"))
    _token = field_validator("token")(lambda value: _callback_token(value))


class SmartbotConfig(_Section):
    enabled: bool = False
    # URL path of the smart bot's callback (智能机器人 → 接收消息 URL).
    path: str = "/wecom/smartbot"
    # The smart bot's id (aibotid); when set, callbacks for another bot are refused.
    bot_id: str = Field("", max_length=128)
    # The bot's display name: "@name" is removed from messages; when empty, a leading @-mention is.
    bot_name: str = Field("", max_length=64)
    # Replies ready within this many seconds go back in the callback response (WeCom waits 5 s).
    reply_budget_seconds: float = Field(2.0, gt=0, le=4.5)
    # A reply that no stream refresh fetched within this many seconds after it was ready goes to response_url.
    stream_grace_seconds: float = Field(15.0, gt=0, le=3000)
    # How often each process looks for replies to post through response_url.
    sweep_interval_seconds: float = Field(2.0, gt=0, le=60)
    # response_url is only used when it starts with this (it should always be WeCom's API).
    response_url_prefix: str = "https://qyapi.weixin.qq.com/"
    replay_window_seconds: int = Field(600, ge=0)
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    body_timeout_seconds: float = Field(5.0, gt=0)
    # Secrets: environment only (QUNBOT_SMARTBOT_TOKEN, QUNBOT_SMARTBOT_ENCODING_AES_KEY).
    token: str = Field("", repr=False)
    encoding_aes_key: str = Field("", repr=False)

    _path = field_validator("path")(lambda value: _url_path(value))
    _aes_key = field_validator("encoding_aes_key")(lambda value: _aes_key(value, "the smart bot's settings"))
    _token = field_validator("token")(lambda value: _callback_token(value))


class AdminsConfig(_Section):
    # Bot admins: may use every command in every group. Each entry is a platform user id ("zhangsan"), or
    # "channel:user" to name the user on one channel only ("wecom:zhangsan", "simulator:u1").
    bot_admins: list[str] = []
    # Group owners and admins as the platform reports them count as group admins.
    trust_platform_admins: bool = True


# A [number, value] pair in the config: validated as a tuple, shown (config check, JSON) as the list it was written as.
Tier = Annotated[tuple[int, int], PlainSerializer(list, return_type=list)]
LevelStep = Annotated[tuple[int, str], PlainSerializer(list, return_type=list)]


class CheckinConfig(_Section):
    # Points for every daily check-in.
    base_points: int = Field(10, ge=0, le=100_000)
    # [[days, bonus], ...]: a streak of at least `days` adds `bonus` (the highest tier reached applies).
    streak_bonus: list[Tier] = [(3, 5), (7, 10), (30, 20)]
    # Most points one check-in can earn, bonus included; 0 for no cap.
    daily_cap: int = Field(30, ge=0, le=100_000)
    # [[lifetime points, name], ...]: levels by points ever earned, from 0 upwards.
    levels: list[LevelStep] = [(0, "新人"), (100, "活跃成员"), (500, "核心成员"), (2000, "元老")]
    # May an admin's deduction take a member's balance below zero?
    allow_negative_balance: bool = False
    # Rows on the leaderboard (the caller's own rank is added when outside them).
    leaderboard_size: int = Field(10, ge=1, le=50)

    @field_validator("streak_bonus")
    @classmethod
    def _tiers(cls, value: list[tuple[int, int]]) -> list[tuple[int, int]]:
        for n, (days, bonus) in enumerate(value):
            if days < 1 or bonus < 0:
                raise ValueError(f"tier {[days, bonus]}: days must be >= 1 and bonus >= 0")
            if n and (days <= value[n - 1][0] or bonus < value[n - 1][1]):
                raise ValueError("tiers must be sorted by days (each longer than the last) with bonuses "
                                 "that never shrink, e.g. [[3, 5], [7, 10], [30, 20]]")
        return value

    @field_validator("levels")
    @classmethod
    def _levels(cls, value: list[tuple[int, str]]) -> list[tuple[int, str]]:
        if not value or value[0][0] != 0:
            raise ValueError('the first level must start at 0 points, e.g. [[0, "新人"], [100, "活跃成员"]]')
        for n, (points, name) in enumerate(value):
            if not name.strip():
                raise ValueError(f"level at {points} points has no name")
            if n and points <= value[n - 1][0]:
                raise ValueError("levels must be sorted by points, each threshold higher than the last")
        if len({name for _, name in value}) != len(value):
            raise ValueError("level names must be different")
        return value

    @field_validator("daily_cap")
    @classmethod
    def _cap(cls, value: int, info: ValidationInfo) -> int:
        base = info.data.get("base_points", 0)
        if value and value < base:
            raise ValueError(f"must be 0 (no cap) or at least base_points ({base}), got {value}")
        return value


class LotteryConfig(_Section):
    # Join keyword of a lottery created without one.
    default_keyword: str = Field("参加抽奖", min_length=1, max_length=32)
    # How often the scheduled job looks for lotteries past their deadline (seconds).
    job_interval_seconds: float = Field(5.0, gt=0, le=3600)
    # A drawer (or announcer) that vanished is replaced after this lease (seconds).
    lease_seconds: float = Field(60.0, gt=0, le=3600)
    # Entrants one lottery accepts.
    max_entrants: int = Field(100_000, ge=1, le=1_000_000)
    # Winners one lottery may have (sum of the prizes' stock).
    max_winners: int = Field(500, ge=1, le=10_000)
    # How far ahead a deadline may be set (days).
    max_days_ahead: int = Field(365, ge=1, le=3650)


class FaqConfig(_Section):
    enabled: bool = True
    # Confidence (0-1) at or above which the bot answers; in [suggest_threshold, answer_threshold) it
    # offers suggestions; below, it stays silent.
    answer_threshold: float = Field(0.6, gt=0, le=1)
    suggest_threshold: float = Field(0.4, gt=0, le=1)
    max_suggestions: int = Field(3, ge=0, le=10)
    # The same entry is not answered again in a group within this many seconds (0: no cooldown).
    cooldown_seconds: float = Field(300.0, ge=0)
    # Messages with fewer letters/characters than this (after dropping punctuation and emoji) are ignored.
    min_chars: int = Field(2, ge=1)
    # Longer messages are not FAQ questions (and cost time to segment).
    max_chars: int = Field(200, ge=10)
    # Log questions the bot could not answer, grouped by similarity, for `qunbot faq unanswered`.
    log_unanswered: bool = True
    # Synonym groups: every word of a group is read as the group's first word.
    synonyms: list[list[str]] = [
        ["快递", "物流", "包裹"], ["优惠券", "优惠卷", "券", "代金券", "折扣券", "红包"],
        ["积分", "积份", "分数"], ["退款", "退钱", "退费"], ["发货", "发出", "寄出", "出库", "发走"],
        ["会员", "vip", "会员卡"], ["门店", "实体店", "线下店", "店铺", "店里"], ["尺码", "码数", "尺寸"],
        ["客服", "人工", "人工客服"], ["发票", "开票"], ["收货地址", "地址"], ["售后", "退换货"],
        ["权益", "福利", "好处", "特权"], ["获得", "攒", "赚", "拿到", "得到"], ["兑换", "换", "抵扣", "抵"],
        ["过期", "清零", "失效", "到期"], ["取消", "撤销", "不想要"], ["上班", "在线", "上线"],
        ["营业", "开门", "关门"], ["破损", "碎", "坏", "摔坏"], ["到账", "退回来"],
    ]
    # Extra filler words to ignore, on top of the built-in ones (请问, 那个, 呀, 吗 …).
    stopwords: list[str] = []

    @field_validator("synonyms")
    @classmethod
    def _groups(cls, value: list[list[str]]) -> list[list[str]]:
        if any(len([w for w in group if w.strip()]) < 2 for group in value):
            raise ValueError("each synonym group needs at least two words")
        return value


class TemplatesConfig(_Section):
    # A TOML file overriding any of the default texts in bot/templates/zh/*.toml.
    file: str = ""

    @field_validator("file")
    @classmethod
    def _exists(cls, value: str) -> str:
        if value and not Path(value).is_file():
            raise ValueError(f"file {value!r} does not exist")
        return value


class Config(_Section):
    timezone: str = "Asia/Shanghai"
    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    log: LogConfig = LogConfig()
    simulator: SimulatorConfig = SimulatorConfig()
    inbox: InboxConfig = InboxConfig()
    welcome: WelcomeConfig = WelcomeConfig()
    wecom: WeComConfig = WeComConfig()
    smartbot: SmartbotConfig = SmartbotConfig()
    admins: AdminsConfig = AdminsConfig()
    checkin: CheckinConfig = CheckinConfig()
    lottery: LotteryConfig = LotteryConfig()
    faq: FaqConfig = FaqConfig()
    templates: TemplatesConfig = TemplatesConfig()

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}") from exc
        return value

    @property
    def auto_migrate(self) -> bool:
        if self.database.auto_migrate is not None:
            return self.database.auto_migrate
        return self.database.url.startswith("sqlite")


SECRET_KEYS = {("wecom", "token"), ("wecom", "encoding_aes_key"), ("wecom", "corp_secret"),
               ("smartbot", "token"), ("smartbot", "encoding_aes_key")}


def env_name(section: str | None, key: str) -> str:
    """The environment variable that overrides ``section.key``."""
    return ENV_PREFIX + (f"{section}_{key}" if section else key).upper()


def _keys() -> dict[str, tuple[str | None, str, Any]]:
    """Map every environment name to (section, key, annotation)."""
    out: dict[str, tuple[str | None, str, Any]] = {}
    for name, field in Config.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, _Section):
            for key, sub in annotation.model_fields.items():
                out[env_name(name, key)] = (name, key, sub.annotation)
        else:
            out[env_name(None, name)] = (None, name, annotation)
    return out


def _parse_env_value(raw: str, annotation: Any) -> Any:
    text = str(annotation)
    if annotation is bool or text == "bool | None":
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        if lowered in ("", "none", "auto") and "None" in text:
            return None
        raise ValueError(f"expected true or false, got {raw!r}")
    if "None" in text and raw.strip().lower() in ("", "none"):
        return None
    stripped = raw.strip()
    if text.startswith(("list[", "dict[")) or stripped.startswith(("[", "{")):
        if stripped.startswith(("[", "{")):
            try:
                return json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise ValueError(f"expected JSON, got {raw!r}: {exc.msg}") from None
        if text.startswith("list["):
            # A plain comma-separated list: "a,b,c".
            return [item.strip() for item in raw.split(",") if item.strip()]
        raise ValueError(f"expected a JSON object, got {raw!r}")
    return raw  # pydantic coerces numbers from strings


def _describe(exc: ValidationError, origin: dict[str, str]) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    where = origin.get(key, "config")
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"invalid configuration: {key} ({where}): {msg}"


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Config:
    """Load the config file (if any), apply environment overrides, validate.

    Raises ConfigError with one message that names the key at fault.
    """
    environ = dict(os.environ if environ is None else environ)
    data: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if path is None and environ.get("QUNBOT_CONFIG"):
        path = environ["QUNBOT_CONFIG"]
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"invalid configuration: config file {file} does not exist")
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"invalid configuration: {file} is not valid TOML: {exc}") from exc
        for section, value in data.items():
            origin[section] = str(file)
            if isinstance(value, dict):
                for key in value:
                    origin[f"{section}.{key}"] = str(file)
                    if (section, key) in SECRET_KEYS:
                        raise ConfigError(
                            f"invalid configuration: {section}.{key} ({file}): secrets are read from the "
                            f"environment only; set {env_name(section, key)} instead"
                        )

    keys = _keys()
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == "QUNBOT_CONFIG":
            continue
        if name not in keys:
            raise ConfigError(f"invalid configuration: environment variable {name} names no config key")
        section, key, annotation = keys[name]
        dotted = f"{section}.{key}" if section else key
        try:
            value = _parse_env_value(raw, annotation)
        except ValueError as exc:
            raise ConfigError(f"invalid configuration: {dotted} ({name}): {exc}") from exc
        if section:
            if not isinstance(data.get(section, {}), dict):
                raise ConfigError(f"invalid configuration: {section} must be a table")
            data.setdefault(section, {})[key] = value
        else:
            data[key] = value
        origin[dotted] = name

    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin)) from exc
    _check_consistency(config, origin)
    return config


def _check_consistency(config: Config, origin: dict[str, str]) -> None:
    w = config.wecom
    if w.enabled:
        required = {"corp_id": w.corp_id, "token": w.token, "encoding_aes_key": w.encoding_aes_key}
        for key, value in required.items():
            if not value:
                where = origin.get("wecom.enabled", "config")
                how = "set" if ("wecom", key) in SECRET_KEYS else "set it in the config file or set"
                raise ConfigError(f"invalid configuration: wecom.{key}: required when wecom.enabled ({where}); "
                                  f"{how} {env_name('wecom', key)}")
    s = config.smartbot
    if s.enabled:
        for key in ("token", "encoding_aes_key"):
            if not getattr(s, key):
                raise ConfigError(f"invalid configuration: smartbot.{key}: required when smartbot.enabled "
                                  f"({origin.get('smartbot.enabled', 'config')}); set {env_name('smartbot', key)}")
        if w.enabled and s.path == w.callback_path:
            raise ConfigError(f"invalid configuration: smartbot.path ({origin.get('smartbot.path', 'config')}): "
                              f"must differ from wecom.callback_path ({w.callback_path})")


def redacted(config: Config) -> dict[str, Any]:
    """The effective configuration with secrets (and any database password) masked, for `qunbot config check`."""
    from sqlalchemy.engine import make_url

    dump = config.model_dump()
    for section, key in SECRET_KEYS:
        if dump[section][key]:
            dump[section][key] = "***"
    try:
        dump["database"]["url"] = make_url(config.database.url).render_as_string(hide_password=True)
    except Exception:  # noqa: S110 - an unparsable URL has no password to hide
        pass
    return dump


def apply_overrides(config: Config, **values: Any) -> None:
    """Command-line overrides (e.g. server.port=--port), validated like the file and environment."""
    for dotted, (value, flag) in values.items():
        if value is None:
            continue
        section, key = dotted.split(".")
        try:
            setattr(getattr(config, section), key, value)
        except ValidationError as exc:
            msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise ConfigError(f"invalid configuration: {dotted} ({flag}): {msg}") from None
