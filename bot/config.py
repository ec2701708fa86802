"""Configuration: a TOML file (optional), overridden key by key from ``QUNBOT_*`` environment variables.

Every key lives in a section; its environment name is ``QUNBOT_<SECTION>_<KEY>`` in upper case, e.g.
``database.url`` → ``QUNBOT_DATABASE_URL``. Secrets are accepted from the environment only, so a config
file that is committed or shared can never carry them.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from datetime import date
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

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
# QUNBOT_ variables that are not config keys: the config file's path, and the pid a `qunbot run --processes`
# child is told its supervisor has (bot/supervisor.py).
NOT_KEYS = frozenset({"QUNBOT_CONFIG", "QUNBOT_SUPERVISOR_PID"})


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
    # Bot processes serving the port (bot/supervisor.py); 0 = one per CPU.
    processes: int = Field(1, ge=0, le=64)


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
    # Acknowledgements first: while at least this many accepts wait for their commit at once, background
    # processing starts `busy_share` events per event accepted (the rest wait, durably, for the burst to end).
    busy_accepts: int = Field(8, ge=1, le=10000)
    busy_share: float = Field(0.05, gt=0, le=10)
    # Queued events kept whole in memory per process; beyond it only their ids are kept (up to
    # bot.inbox.OVERFLOW_IDS) and each is read back from its row when the queue has room.
    backlog_max: int = Field(2000, ge=100, le=1_000_000)
    # How often each process looks for events to take over (failed attempts, expired leases), in seconds.
    recovery_interval_seconds: float = Field(5.0, gt=0, le=3600)
    # Processed events (and the per-event keys and callback replies kept for their retries) are deleted after
    # this many days, hourly, by one process; 0 keeps them forever.
    keep_days: int = Field(14, ge=0, le=3650)


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


class _CallbackDoor(_Section):
    """What every door taking callbacks over HTTP has: its URL path (`path`, the WeCom app's `callback_path`)
    and the limits on a request."""

    max_body_bytes: int = Field(64 * 1024, ge=1024)
    # A request body must arrive completely within this many seconds.
    body_timeout_seconds: float = Field(5.0, gt=0)

    @field_validator("path", "callback_path", check_fields=False)
    @classmethod
    def _check_path(cls, value: str) -> str:
        return _url_path(value)


class _EncryptedCallbackDoor(_CallbackDoor):
    """A door taking WeCom's encrypted callbacks (the WeCom app, smart bot, group robot, Official Account):
    a replay window, and the Token and EncodingAESKey (secrets: environment only, e.g. QUNBOT_SMARTBOT_TOKEN
    and QUNBOT_SMARTBOT_ENCODING_AES_KEY)."""

    # Where the EncodingAESKey is shown, for the error naming a wrong one.
    aes_key_from: ClassVar[str] = "the platform's settings"

    # Reject callbacks whose timestamp is further than this from now (0 disables the check).
    replay_window_seconds: int = Field(600, ge=0)
    token: str = Field("", repr=False)
    encoding_aes_key: str = Field("", repr=False)

    @field_validator("encoding_aes_key", "previous_encoding_aes_key", check_fields=False)
    @classmethod
    def _check_aes_key(cls, value: str) -> str:
        return _aes_key(value, cls.aes_key_from)

    @field_validator("token")
    @classmethod
    def _check_token(cls, value: str) -> str:
        return _callback_token(value)


class WeComConfig(_EncryptedCallbackDoor):
    aes_key_from = "the WeCom admin console"

    enabled: bool = False
    corp_id: str = ""
    agent_id: int | None = None
    callback_path: str = "/wecom/callback"
    api_base_url: str = "https://qyapi.weixin.qq.com"
    # Keep the customer-group welcome template (group_welcome_template) in sync with the welcome text.
    sync_welcome_template: bool = True
    # Fetch groupchat/get on joins to record names, join scene and inviter.
    enrich_members: bool = True
    # Groups the app created (appchat/create), by chatid: scheduled posts go straight in with appchat/send.
    # Every other wecom group is a customer group (客户群): posts become add_msg_template tasks its owner sends.
    appchat_ids: list[str] = []
    # appchat/send messages the app sends in any minute / UTC day (0: no limit). WeCom silently drops what a
    # member receives from one app beyond 200 a minute or 10,000 a day, so the app's total stays below.
    appchat_per_minute: int = Field(200, ge=0, le=100_000)
    appchat_per_day: int = Field(10_000, ge=0, le=10_000_000)
    # Mass messages one customer group may receive per period (0: no cap here; WeCom refuses the excess).
    group_msg_cap: int = Field(4, ge=0, le=1000)
    group_msg_cap_period: Literal["day", "week", "month"] = "month"
    # A task its owner has not sent after this many hours is cancelled and its groups recorded failed.
    group_msg_confirm_hours: float = Field(24.0, gt=0, le=24 * 30)
    # How often one process (a database lease) creates tasks for queued posts and follows open ones.
    group_msg_poll_seconds: float = Field(30.0, gt=0, le=3600)
    # How often an open task's state is read from WeCom (get_groupmsg_task, get_groupmsg_send_result).
    group_msg_check_seconds: float = Field(300.0, gt=0, le=86400)
    # A run's customer-group posts wait up to this long for the rest of its fan-out: one task per owner.
    group_msg_batch_seconds: float = Field(60.0, ge=0, le=3600)
    # Secret: environment only (QUNBOT_WECOM_CORP_SECRET; also QUNBOT_WECOM_TOKEN, QUNBOT_WECOM_ENCODING_AES_KEY).
    corp_secret: str = Field("", repr=False)


class SmartbotConfig(_EncryptedCallbackDoor):
    aes_key_from = "the smart bot's settings"

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


class SmartbotWsConfig(_Section):
    """The smart bot in long-connection mode (智能机器人 → API 模式 → 长连接): no public URL needed."""

    enabled: bool = False
    # WeCom's WebSocket endpoint (tests point it at a fake).
    url: str = "wss://openws.work.weixin.qq.com"
    # The bot's BotID from its long-connection settings; frames for another aibotid are ignored.
    bot_id: str = Field("", max_length=128)
    # The bot's display name: "@name" is removed from messages; when empty, a leading @-mention is.
    bot_name: str = Field("", max_length=64)
    # A ping every this many seconds (WeCom asks for 30); two unanswered pings drop the connection.
    heartbeat_seconds: float = Field(30.0, gt=0, le=300)
    # Reconnect delays: doubling from min to max, each shortened by up to `backoff_jitter` (a fraction).
    backoff_min_seconds: float = Field(1.0, gt=0, le=600)
    backoff_max_seconds: float = Field(60.0, gt=0, le=3600)
    backoff_jitter: float = Field(0.3, ge=0, lt=1)
    # One process holds the connection: its lease row is renewed with each heartbeat and lasts this long.
    # If the holder dies, another takes over within lease_seconds + standby_poll_seconds.
    lease_seconds: float = Field(90.0, gt=0, le=3600)
    # How often a process without the connection checks whether the lease is free.
    standby_poll_seconds: float = Field(5.0, gt=0, le=600)
    # Opening the WebSocket, and WeCom's answer to a subscribe or a sent frame, may take this long.
    connect_timeout_seconds: float = Field(10.0, gt=0, le=120)
    ack_timeout_seconds: float = Field(5.0, gt=0, le=60)
    # How often the holder looks for posts and replies other processes queued (its own go out at once).
    outbox_poll_seconds: float = Field(1.0, gt=0, le=60)
    # A reply or post still unsent this long after it was queued is given up and recorded as a failure.
    outbox_max_age_seconds: float = Field(3600.0, gt=0, le=7 * 86400)
    # Larger frames close the connection (WeCom's own frames are far smaller).
    max_frame_bytes: int = Field(1024 * 1024, ge=4096)
    # Secret: environment only (QUNBOT_SMARTBOT_WS_SECRET), the Secret shown next to the BotID.
    secret: str = Field("", repr=False)

    @field_validator("url")
    @classmethod
    def _ws_url(cls, value: str) -> str:
        if not value.startswith(("wss://", "ws://")):
            raise ValueError("must be a wss:// (or ws://) URL")
        return value


class OfficialAccountConfig(_EncryptedCallbackDoor):
    aes_key_from = "the Official Account's 消息推送 settings"

    enabled: bool = False
    # URL path of the callback (the 服务器地址(URL) of the account's 消息推送 settings).
    path: str = "/wechat/mp"
    # The account's AppID (开发者ID): the receiveid inside encrypted messages; required unless mode is plain.
    app_id: str = Field("", max_length=64)
    # 消息加解密方式 as set on the platform: plain (明文), compatible (兼容, both), safe (安全, encrypted only).
    mode: Literal["plain", "compatible", "safe"] = "safe"
    # Replies ready within this many seconds go back as the passive reply (WeChat waits 5 s); later, "success".
    reply_budget_seconds: float = Field(4.0, gt=0, le=4.5)
    # Secret: environment only (QUNBOT_OFFICIAL_ACCOUNT_PREVIOUS_ENCODING_AES_KEY), while a changed key settles.
    previous_encoding_aes_key: str = Field("", repr=False)


class GatewayConfig(_CallbackDoor):
    enabled: bool = False
    # URL path where gateways POST their signed JSON events (the gateway names itself in X-Qunbot-Gateway).
    path: str = "/gateway/events"
    # Where each gateway takes the bot's later replies and proactive posts: {name = "http(s)://..."}.
    # A gateway without one gets replies only in the responses to its events.
    outbound_urls: dict[str, str] = {}
    # Replies ready within this many seconds go back in the event's own response; later ones go to the
    # gateway's outbound URL. 0: every reply goes to the outbound URL.
    reply_budget_seconds: float = Field(3.0, ge=0, le=60)
    # Reject events whose X-Qunbot-Timestamp is further than this many seconds from now.
    replay_window_seconds: int = Field(300, ge=1, le=86400)
    # Outbound POSTs: timeout of one attempt, attempts in all, and the backoff between them (doubling).
    outbound_timeout_seconds: float = Field(10.0, gt=0, le=120)
    outbound_max_attempts: int = Field(8, ge=1, le=100)
    outbound_backoff_seconds: float = Field(2.0, gt=0, le=3600)
    outbound_backoff_max_seconds: float = Field(300.0, gt=0, le=86400)
    # How often each process looks for outbound messages that are due (a new reply is sent at once).
    sweep_interval_seconds: float = Field(1.0, gt=0, le=60)
    # Secrets: environment only (QUNBOT_GATEWAY_SECRETS='{"wechat": "..."}'); a list of secrets per name
    # while one is being replaced (the first signs outbound POSTs, any of them verifies inbound events).
    secrets: dict[str, str | list[str]] = Field({}, repr=False)

    @field_validator("outbound_urls")
    @classmethod
    def _urls(cls, value: dict[str, str]) -> dict[str, str]:
        for name, url in value.items():
            _gateway_name(name)
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{name}: must be an http:// or https:// URL")
        return value

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, value: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        for name, secret in value.items():
            _gateway_name(name)
            for one in [secret] if isinstance(secret, str) else secret:
                if len(one) < 16:
                    raise ValueError(f"{name}: each secret must be at least 16 characters (use 32 random bytes, hex)")
            if not isinstance(secret, str) and not secret:
                raise ValueError(f"{name}: needs at least one secret")
        return value


def _gateway_name(name: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", name):
        raise ValueError(f"gateway name {name!r} must be 1-32 of a-z, 0-9, _ and -, starting with a letter or digit")
    return name


def _webhook_key(value: str) -> str:
    """A group robot's key, given as the key itself or as its whole webhook URL (…/webhook/send?key=KEY)."""
    from urllib.parse import parse_qs, urlsplit

    key = value.strip()
    if "://" in key:
        found = parse_qs(urlsplit(key).query).get("key", [""])
        key = found[0]
    if not key or len(key) > 128 or not all(c.isalnum() or c in "-_" for c in key):
        # Never echo the value: it is a credential.
        raise ValueError("each robot key must be a webhook key (letters, digits, - and _) or a webhook URL with key=")
    return key


class RobotConfig(_EncryptedCallbackDoor):
    aes_key_from = "the group robot's settings"

    enabled: bool = False
    # Where webhook sends go (WeCom's API; tests point it at a fake).
    api_base_url: str = "https://qyapi.weixin.qq.com"
    # WeCom takes 20 messages a minute per robot: at most `rate_limit` sends per robot in any window of
    # `rate_window_seconds`, counted in the database, so all processes together keep to it.
    rate_limit: int = Field(20, ge=1, le=1000)
    rate_window_seconds: float = Field(60.0, gt=0, le=3600)
    # A send waits at most this long for its robot's next free slot (and through 45009 back-offs), then fails
    # (scheduled posts then retry when the slot is free); keep it below push.send_timeout_seconds.
    max_wait_seconds: float = Field(25.0, gt=0, le=3600)
    # Attempts in all for a send WeCom answers with -1 (system busy) or that never reached it.
    max_attempts: int = Field(4, ge=1, le=20)
    # First pause before a retry (doubling on each further one).
    backoff_seconds: float = Field(1.0, gt=0, le=60)
    timeout_seconds: float = Field(10.0, gt=0, le=120)
    # Text over WeCom's size limit (2048 bytes, markdown 4096) is split at line breaks into at most this many
    # messages; what still does not fit is cut with "…".
    max_parts: int = Field(3, ge=1, le=10)
    # Callback mode (optional; on when token and encoding_aes_key are set): URL path of 接收消息 in the robot's settings.
    path: str = "/wecom/robot"
    # The robot's display name: "@name" is removed from messages; when empty, a leading @-mention is.
    bot_name: str = Field("", max_length=64)
    # Replies ready within this many seconds go back in the callback response (WeCom waits 5 s); later ones
    # are sent through the webhook to the message's chat.
    reply_budget_seconds: float = Field(2.0, gt=0, le=4.5)
    # A ready reply no callback handed over within this many seconds is sent through the webhook.
    reply_grace_seconds: float = Field(15.0, gt=0, le=3600)
    # How often each process looks for such replies.
    sweep_interval_seconds: float = Field(2.0, gt=0, le=60)
    # Secrets: environment only. QUNBOT_ROBOT_KEYS='{"<group>": "<key or webhook URL>"}' names the robot of
    # each push-only group (<group>: the ChatId, or any name scheduled posts use for it);
    # QUNBOT_ROBOT_TOKEN and QUNBOT_ROBOT_ENCODING_AES_KEY turn on callback mode.
    keys: dict[str, str] = Field({}, repr=False)

    @field_validator("keys")
    @classmethod
    def _keys(cls, value: dict[str, str]) -> dict[str, str]:
        for group in value:
            if not group.strip() or len(group) > 128:
                raise ValueError("each group name must be 1..128 characters")
        return {group: _webhook_key(key) for group, key in value.items()}

    @property
    def callback(self) -> bool:
        """Callback mode: the robot's @-mentions come in through `path`."""
        return bool(self.token and self.encoding_aes_key)


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


# A date in the config, shown (config check, JSON) as YYYY-MM-DD.
IsoDate = Annotated[date, PlainSerializer(lambda d: d.isoformat(), return_type=str)]


class PushPostConfig(_Section):
    """A scheduled post declared in the config file ([[push.posts]]); upserted by name at start-up."""

    name: str = Field(min_length=1, max_length=64)
    # "0 9 * * *" (cron), "every 30m" / "每2小时", "每天 09:00", "工作日 8:30", "2026-05-01 09:00" (once).
    schedule: str
    # The schedule's timezone; empty: the bot's `timezone`.
    timezone: str = ""
    # Targets, exactly one of: listed groups ("channel:group" or a group id on `channel`), a tag, or all.
    groups: list[str] = []
    tag: str = Field("", max_length=64)
    all: bool = False
    # The door of bare group ids (default simulator); with tag or all, only groups on this door.
    channel: str = Field("", max_length=32)
    kind: Literal["text", "markdown", "image", "news"] = "text"
    # Text with {date} {weekday} {group_name} {member_count} {yesterday_checkins} {days_until:2026-11-11}.
    content: str = ""
    # image: {url = "…"} or {base64 = "…", md5 = "…"}; news: {articles = [{title, url, description, picurl}]}.
    payload: dict[str, Any] = {}
    enabled: bool = True
    # The campaign it belongs to (its name: [[campaigns]] or `qunbot campaign add`) and its phase there (预热
    # 爆发 长尾 复盘): it fires only on those days, may use {campaign} {phase} {days_left}, and without targets
    # or timezone of its own takes the campaign's. "": none.
    campaign: str = Field("", max_length=64)
    phase: str = Field("", max_length=16)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        from bot.push_spec import check_timezone

        return check_timezone(value) if value else value

    @field_validator("phase")
    @classmethod
    def _phase(cls, value: str) -> str:
        from storage.campaign import CampaignError, parse_phase

        try:
            return parse_phase(value) if value else value
        except CampaignError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str, info: ValidationInfo) -> str:
        from datetime import UTC, datetime

        from bot.push_spec import parse_schedule

        parse_schedule(value, tz=info.data.get("timezone") or "UTC", now=datetime.now(UTC), allow_past=True)
        return value

    @field_validator("payload")
    @classmethod
    def _payload(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        from bot.push_spec import check_payload

        return check_payload(info.data.get("kind", "text"), value)

    def check_targets(self) -> None:
        given = sum((bool(self.groups), bool(self.tag), self.all))
        if given > 1 or (given == 0 and not self.campaign):
            raise ValueError(f"post {self.name!r}: give exactly one of groups, tag or all = true "
                             "(or none, with campaign: the campaign's groups)")
        if self.phase and not self.campaign:
            raise ValueError(f"post {self.name!r}: phase needs campaign")
        if self.kind in ("text", "markdown") and not self.content.strip():
            raise ValueError(f"post {self.name!r}: content is empty")


class PushConfig(_Section):
    # Run the post timers and the outbox worker in this process (chat and CLI management work regardless).
    enabled: bool = True
    # After downtime, firings missed by up to this many seconds are sent (marked late); older ones are skipped.
    grace_seconds: float = Field(3600.0, ge=0, le=30 * 86400)
    # A run recorded more than this many seconds after its time is marked late.
    late_after_seconds: float = Field(60.0, gt=0, le=3600)
    # Of several missed firings of one post within the grace period, send only the latest (others: skipped).
    coalesce_missed: bool = False
    # Default quiet hours in each group's timezone ("22:00-08:00"; "" for none): posts wait until they end.
    quiet_hours: str = "22:00-08:00"
    # Default most posts per group and local day (0: no cap); more are skipped with the reason.
    daily_cap: int = Field(10, ge=0, le=10_000)
    # Deliveries sent at once by one process (each waits on the platform's answer; 8 capped a 1,000-group
    # fan-out at about 90 sends a second against a 50 ms API, see bench/push_fanout.py).
    concurrency: int = Field(32, ge=1, le=1024)
    # Tries of a delivery that keeps failing (transient errors) before it is recorded as failed.
    max_attempts: int = Field(5, ge=1, le=100)
    # Backoff between tries: doubling from retry_base_seconds, at most retry_max_seconds.
    retry_base_seconds: float = Field(10.0, gt=0, le=3600)
    retry_max_seconds: float = Field(600.0, gt=0, le=86400)
    # One send may take this long before it counts as a transient failure.
    send_timeout_seconds: float = Field(30.0, gt=0, le=600)
    # A claimed delivery whose process died is taken again after this lease (must exceed send_timeout_seconds).
    lease_seconds: float = Field(120.0, gt=0, le=3600)
    # How often the outbox looks for due deliveries queued by other processes (its own start at once).
    poll_interval_seconds: float = Field(1.0, gt=0, le=60)
    # How often each process re-reads the posts (changes from the CLI or another process) and catches up.
    sync_interval_seconds: float = Field(10.0, gt=0, le=3600)
    # A delivery whose door no running process has is skipped after waiting this long.
    unserved_timeout_seconds: float = Field(600.0, gt=0, le=30 * 86400)
    # Named dates for {days_until:NAME}, e.g. {双十一 = 2026-11-11}.
    dates: dict[str, IsoDate] = {}
    posts: list[PushPostConfig] = []

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, value: str) -> str:
        from bot.push_spec import format_quiet_hours, parse_quiet_hours

        return format_quiet_hours(parse_quiet_hours(value))

    @field_validator("lease_seconds")
    @classmethod
    def _lease(cls, value: float, info: ValidationInfo) -> float:
        timeout = info.data.get("send_timeout_seconds", 0)
        if value <= timeout:
            raise ValueError(f"must be longer than send_timeout_seconds ({timeout:g})")
        return value

    @field_validator("posts")
    @classmethod
    def _posts(cls, value: list[PushPostConfig], info: ValidationInfo) -> list[PushPostConfig]:
        from bot.push_spec import SpecError, check_content

        names = [post.name for post in value]
        if len(set(names)) != len(names):
            raise ValueError("post names must be different")
        for post in value:
            post.check_targets()
            try:
                check_content(post.content, info.data.get("dates", {}), campaign=bool(post.campaign))
            except SpecError as exc:
                # A campaign's own dates are checked with the campaign (here when the file declares it, else
                # at start-up).
                if not (post.campaign and exc.key == "days_until"):
                    raise
        return value


class CampaignConfig(_Section):
    # Run the milestone-reminder job in this process (the CLI and 活动 work regardless).
    enabled: bool = True
    # Where reminders go unless a campaign says otherwise: "channel:group" — a group ("robot:ops") gets them
    # with the campaign's ops users @-mentioned; a door's 1:1 scope ("wecom:@direct") messages each ops
    # user one to one (the WeCom app's message/send). "": none (reminders are recorded as skipped).
    reminder_target: str = ""
    # Days before the key date to remind ops on (0: on the day); each phase's first day always reminds.
    reminder_days_before: list[int] = [7, 3, 1]
    # Local time (the campaign's timezone) a milestone's reminder is due on its day.
    reminder_time: str = "10:00"
    # How often each process looks for due milestones and sends reminders (seconds).
    reminder_interval_seconds: float = Field(60.0, gt=0, le=3600)
    # A milestone found (or still unsent) later than this after its time is recorded as skipped (failed).
    reminder_grace_seconds: float = Field(86400.0, gt=0, le=30 * 86400)
    # Tries of a reminder whose sends keep failing before it is recorded as failed; the wait between tries
    # doubles from reminder_retry_seconds.
    reminder_max_attempts: int = Field(5, ge=1, le=100)
    reminder_retry_seconds: float = Field(60.0, gt=0, le=3600)
    # A reminder claimed by a process that died is taken over after this lease (seconds).
    reminder_lease_seconds: float = Field(120.0, gt=0, le=3600)

    @field_validator("reminder_target")
    @classmethod
    def _target(cls, value: str) -> str:
        if value and not re.fullmatch(r"[a-z_]{2,32}:\S+", value.strip()):
            raise ValueError(f"must look like robot:ops or wecom:@direct, got {value!r}")
        return value.strip()

    @field_validator("reminder_days_before")
    @classmethod
    def _days(cls, value: list[int]) -> list[int]:
        if any(not 0 <= d <= 365 for d in value):
            raise ValueError("days must be 0..365")
        return sorted(set(value), reverse=True)

    @field_validator("reminder_time")
    @classmethod
    def _time(cls, value: str) -> str:
        found = re.fullmatch(r"(\d{1,2}):(\d{2})", value.strip())
        if found is None or int(found.group(1)) > 23 or int(found.group(2)) > 59:
            raise ValueError(f"must be a time of day like 10:00, got {value!r}")
        return f"{int(found.group(1)):02d}:{found.group(2)}"


class CampaignDeclaration(_Section):
    """A campaign declared in the config file ([[campaigns]]); upserted by name at start-up (as `qunbot campaign
    add` / `edit` would), removed with its posts when the file no longer declares it."""

    name: str = Field(min_length=1, max_length=64)
    title: str = Field(min_length=1, max_length=128)
    # Its dates are read in this timezone; empty: the bot's `timezone`.
    timezone: str = ""
    key_date: IsoDate
    key_name: str = Field("关键日", min_length=1, max_length=32)
    # Phase → its days: {预热 = "2026-11-01..2026-11-07", 爆发 = "2026-11-08..11-11", 复盘 = "2026-11-15"}.
    phases: dict[str, str] = Field(min_length=1)
    # Extra named dates for {days_until:NAME}: {直播 = 2026-11-10}.
    dates: dict[str, IsoDate] = {}
    # Targets, exactly one of: listed groups ("channel:group" or an id on `channel`), a tag, or all.
    groups: list[str] = []
    tag: str = Field("", max_length=64)
    all: bool = False
    channel: str = Field("", max_length=32)
    owner: str = Field("", max_length=128)
    # Platform user ids reminders @-mention or message one to one.
    ops: list[str] = []
    # Where its reminders go ("robot:ops", "wecom:@direct"); empty: campaign.reminder_target.
    remind_to: str = ""
    # Days before the key date to remind on; absent: campaign.reminder_days_before.
    remind_days: list[int] | None = None

    def fields(self, default_timezone: str, group_ids: tuple[int, ...] = ()) -> Any:
        """The declaration as storage.campaign.CampaignFields (listed groups as row ids, resolved at start-up)."""
        from storage import campaign as store

        phases: dict[str, Any] = {}
        for word, span in self.phases.items():
            phase = store.parse_phase(word)
            if phase in phases:
                raise store.CampaignError("phase", f"phase {word} given twice", text=word)
            phases[phase] = store.parse_span(span)
        kind = store.GROUPS if self.groups else store.TAG if self.tag else store.ALL
        return store.CampaignFields(
            name=self.name, title=self.title, timezone=self.timezone or default_timezone, key_date=self.key_date,
            phases=phases, target_kind=kind, target_tag=self.tag or None,
            target_channel=(self.channel or None) if kind != store.GROUPS else None, group_ids=group_ids,
            key_name=self.key_name, dates=dict(self.dates), owner=self.owner, ops_users=tuple(self.ops),
            reminder_target=self.remind_to or None,
            reminder_days=None if self.remind_days is None else tuple(self.remind_days)).normalized()

    def check(self) -> None:
        from storage.campaign import CampaignError

        if sum((bool(self.groups), bool(self.tag), self.all)) != 1:
            raise ValueError(f"campaign {self.name!r}: give exactly one of groups, tag or all = true")
        try:
            # Listed groups are checked for their spelling here, and become rows at start-up.
            self.fields("UTC", tuple(range(1, len(self.groups) + 1))).check()
        except CampaignError as exc:
            raise ValueError(f"campaign {self.name!r}: {exc}") from None


class ConsoleConfig(_Section):
    # Serve the ops console at /console (accounts are made with `qunbot console create-user`).
    enabled: bool = True
    # A login lasts at most this long, and ends earlier after idle_minutes without a request (0: never idle).
    session_hours: float = Field(12.0, gt=0, le=24 * 30)
    idle_minutes: float = Field(120.0, ge=0)
    # Mark the session cookie Secure (sent over HTTPS only): set true whenever the console is served via HTTPS.
    secure_cookie: bool = False
    same_site: Literal["Lax", "Strict"] = "Lax"
    # Login rate limit: after this many failures within login_window_seconds, for one username (since its
    # last successful login) or from one client address, further attempts get 429 until the window passes.
    login_max_failures: int = Field(5, ge=1)
    login_ip_max_failures: int = Field(20, ge=1)
    login_window_seconds: int = Field(900, ge=1)
    min_password_length: int = Field(10, ge=8, le=128)
    # Behind a reverse proxy: take the client address from X-Forwarded-For (its last hop).
    trust_forwarded_for: bool = False
    # Origins (scheme://host[:port]) allowed to send state-changing requests besides the request's own host,
    # e.g. the public URL when a proxy rewrites the Host header.
    allowed_origins: list[str] = []

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"{origin!r} is not an origin like https://ops.example.com")
        return [o.lower() for o in value]


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
    smartbot_ws: SmartbotWsConfig = SmartbotWsConfig()
    robot: RobotConfig = RobotConfig()
    gateway: GatewayConfig = GatewayConfig()
    official_account: OfficialAccountConfig = OfficialAccountConfig()
    admins: AdminsConfig = AdminsConfig()
    checkin: CheckinConfig = CheckinConfig()
    lottery: LotteryConfig = LotteryConfig()
    faq: FaqConfig = FaqConfig()
    push: PushConfig = PushConfig()
    campaign: CampaignConfig = CampaignConfig()
    # Campaigns declared in the file, as [[campaigns]] tables (see config.example.toml).
    campaigns: list[CampaignDeclaration] = []
    console: ConsoleConfig = ConsoleConfig()
    templates: TemplatesConfig = TemplatesConfig()

    @field_validator("campaigns")
    @classmethod
    def _campaigns(cls, value: list[CampaignDeclaration]) -> list[CampaignDeclaration]:
        names = [c.name.strip() for c in value]
        if len(set(names)) != len(names):
            raise ValueError("campaign names must be different")
        for declared in value:
            declared.check()
        return value

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
               ("smartbot", "token"), ("smartbot", "encoding_aes_key"), ("smartbot_ws", "secret"),
               ("robot", "keys"), ("robot", "token"), ("robot", "encoding_aes_key"),
               ("gateway", "secrets"),
               ("official_account", "token"), ("official_account", "encoding_aes_key"),
               ("official_account", "previous_encoding_aes_key")}


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
        if not name.startswith(ENV_PREFIX) or name in NOT_KEYS:
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
    _check_smartbot_ws(config, origin)
    _check_official_account(config, origin)
    _check_gateway(config, origin)
    _check_robot(config, origin)
    _check_campaign_posts(config, origin)


def _check_campaign_posts(config: Config, origin: dict[str, str]) -> None:
    """Posts of a campaign the file declares: the phase is one of its phases, {days_until:…} names its dates.
    (A post of a campaign made elsewhere is checked at start-up, when the campaign is read.)"""
    from bot.push_spec import SpecError, check_content
    from storage.campaign import CampaignError, check_phase

    declared = {c.name.strip(): c for c in config.campaigns}
    where = origin.get("push.posts", origin.get("push", "config"))
    for n, post in enumerate(config.push.posts):
        campaign = declared.get(post.campaign)
        if campaign is None:
            continue
        from storage.campaign import plan_from_fields

        plan = plan_from_fields(campaign.fields(config.timezone, tuple(range(1, len(campaign.groups) + 1))))
        try:
            check_phase(plan, post.phase or None)
            check_content(post.content, {**config.push.dates, **plan.named_dates()}, campaign=True)
        except (CampaignError, SpecError) as exc:
            key = "phase" if isinstance(exc, CampaignError) else "content"
            raise ConfigError(f"invalid configuration: push.posts.{n}.{key} ({where}): post {post.name!r}: {exc}") from None


def _check_smartbot_ws(config: Config, origin: dict[str, str]) -> None:
    s = config.smartbot_ws
    if not s.enabled:
        return
    where = origin.get("smartbot_ws.enabled", "config")
    for key in ("bot_id", "secret"):
        if not getattr(s, key):
            how = "set" if ("smartbot_ws", key) in SECRET_KEYS else "set it in the config file or set"
            raise ConfigError(f"invalid configuration: smartbot_ws.{key}: required when smartbot_ws.enabled "
                              f"({where}); {how} {env_name('smartbot_ws', key)}")
    if s.lease_seconds <= s.heartbeat_seconds:
        raise ConfigError(f"invalid configuration: smartbot_ws.lease_seconds "
                          f"({origin.get('smartbot_ws.lease_seconds', 'config')}): must be longer than "
                          f"smartbot_ws.heartbeat_seconds ({s.heartbeat_seconds:g}), which renews it; 3 times is good")
    if s.backoff_max_seconds < s.backoff_min_seconds:
        raise ConfigError(f"invalid configuration: smartbot_ws.backoff_max_seconds "
                          f"({origin.get('smartbot_ws.backoff_max_seconds', 'config')}): must be at least "
                          f"smartbot_ws.backoff_min_seconds ({s.backoff_min_seconds:g})")


def _check_official_account(config: Config, origin: dict[str, str]) -> None:
    o = config.official_account
    if not o.enabled:
        return
    where = origin.get("official_account.enabled", "config")
    needed = ["token"] if o.mode == "plain" else ["token", "encoding_aes_key", "app_id"]
    for key in needed:
        if not getattr(o, key):
            how = "set" if ("official_account", key) in SECRET_KEYS else "set it in the config file or set"
            raise ConfigError(f"invalid configuration: official_account.{key}: required when official_account."
                              f"enabled in {o.mode} mode ({where}); {how} {env_name('official_account', key)}")
    taken = {"wecom.callback_path": config.wecom.callback_path if config.wecom.enabled else None,
             "smartbot.path": config.smartbot.path if config.smartbot.enabled else None}
    for other, path in taken.items():
        if path == o.path:
            raise ConfigError(f"invalid configuration: official_account.path "
                              f"({origin.get('official_account.path', 'config')}): must differ from {other} ({path})")


def _check_gateway(config: Config, origin: dict[str, str]) -> None:
    g = config.gateway
    if not g.enabled:
        return
    if not g.secrets:
        raise ConfigError(f"invalid configuration: gateway.secrets: at least one gateway is required when "
                          f"gateway.enabled ({origin.get('gateway.enabled', 'config')}); set "
                          f"{env_name('gateway', 'secrets')}='{{\"wechat\": \"<secret>\"}}'")
    unknown = sorted(set(g.outbound_urls) - set(g.secrets))
    if unknown:
        raise ConfigError(f"invalid configuration: gateway.outbound_urls "
                          f"({origin.get('gateway.outbound_urls', 'config')}): no secret for gateway "
                          f"{', '.join(unknown)}; add it to {env_name('gateway', 'secrets')}")
    taken = {"wecom.callback_path": config.wecom.callback_path if config.wecom.enabled else None,
             "smartbot.path": config.smartbot.path if config.smartbot.enabled else None,
             "official_account.path": config.official_account.path if config.official_account.enabled else None}
    for other, path in taken.items():
        if path == g.path:
            raise ConfigError(f"invalid configuration: gateway.path ({origin.get('gateway.path', 'config')}): "
                              f"must differ from {other} ({path})")


def _check_robot(config: Config, origin: dict[str, str]) -> None:
    r = config.robot
    if not r.enabled:
        return
    where = origin.get("robot.enabled", "config")
    if bool(r.token) != bool(r.encoding_aes_key):
        missing = "token" if not r.token else "encoding_aes_key"
        raise ConfigError(f"invalid configuration: robot.{missing}: callback mode needs both robot.token and "
                          f"robot.encoding_aes_key ({where}); set {env_name('robot', missing)}")
    if not r.keys and not r.callback:
        raise ConfigError(f"invalid configuration: robot.keys: robot.enabled ({where}) needs a robot: set "
                          f"{env_name('robot', 'keys')}='{{\"<group>\": \"<webhook key>\"}}', or callback mode "
                          f"({env_name('robot', 'token')} and {env_name('robot', 'encoding_aes_key')})")
    if r.callback:
        taken = {"wecom.callback_path": config.wecom.callback_path if config.wecom.enabled else None,
                 "smartbot.path": config.smartbot.path if config.smartbot.enabled else None,
                 "official_account.path": config.official_account.path if config.official_account.enabled else None,
                 "gateway.path": config.gateway.path if config.gateway.enabled else None}
        for other, path in taken.items():
            if path == r.path:
                raise ConfigError(f"invalid configuration: robot.path ({origin.get('robot.path', 'config')}): "
                                  f"must differ from {other} ({path})")


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
