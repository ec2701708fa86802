"""Every table, imported in one place so Alembic and the tests see the whole schema."""

from sqlmodel import SQLModel

from storage.activity import MemberActivity
from storage.admins import GroupAdmin
from storage.audit import AuditEntry
from storage.campaign import (
    Campaign,
    CampaignDate,
    CampaignGroup,
    CampaignLottery,
    CampaignPhase,
    CampaignReminder,
)
from storage.checkin import Checkin, CheckinDayCount
from storage.console import ConsoleLoginAttempt, ConsoleSession, ConsoleUser, ConsoleUserGroup
from storage.faq import (
    FaqCooldown,
    FaqCountedEvent,
    FaqDailyCount,
    FaqEntry,
    FaqGroupSettings,
    FaqRevision,
    FaqUnanswered,
)
from storage.gateway import GatewayOutbox
from storage.groups import Group, Member, Membership
from storage.inbox import InboxMessage
from storage.kv import AccessToken, ApiFailure, Lease
from storage.lottery import Lottery, LotteryEntry, LotteryPrize, LotteryRound, LotteryWinner
from storage.official_account import OfficialAccountReply
from storage.points import PointsEntry
from storage.push import (
    PushDailyCount,
    PushDelivery,
    PushGroupSettings,
    PushGroupTag,
    PushPost,
    PushPostGroup,
    PushRun,
    PushWorker,
)
from storage.robot import RobotChat, RobotReply, RobotSendSlot
from storage.smartbot import SmartbotReply
from storage.smartbot_ws import SmartbotWsLease, SmartbotWsOutbox
from storage.transcript import TranscriptMessage
from storage.wecom_push import WeComGroupMsgTarget, WeComGroupMsgTask, WeComQuota
from storage.welcome import PendingWelcome, PlatformWelcomeTemplate, WelcomeSettings

metadata = SQLModel.metadata

__all__ = [
    "AccessToken", "ApiFailure", "AuditEntry", "Campaign", "CampaignDate", "CampaignGroup", "CampaignLottery",
    "CampaignPhase", "CampaignReminder", "Checkin", "CheckinDayCount", "ConsoleLoginAttempt", "ConsoleSession",
    "ConsoleUser", "ConsoleUserGroup", "FaqCooldown", "FaqCountedEvent", "FaqDailyCount", "FaqEntry", "FaqGroupSettings",
    "FaqRevision", "FaqUnanswered", "GatewayOutbox", "Group", "GroupAdmin", "InboxMessage", "Lease", "Lottery", "LotteryEntry", "LotteryPrize", "LotteryRound", "LotteryWinner", "Member", "MemberActivity", "Membership",
    "OfficialAccountReply", "PendingWelcome", "PlatformWelcomeTemplate", "PointsEntry", "PushDailyCount", "PushDelivery", "PushGroupSettings", "PushGroupTag", "PushPost",
    "PushPostGroup", "PushRun", "PushWorker", "RobotChat", "RobotReply", "RobotSendSlot", "SmartbotReply", "SmartbotWsLease", "SmartbotWsOutbox", "TranscriptMessage", "WeComGroupMsgTarget", "WeComGroupMsgTask", "WeComQuota", "WelcomeSettings", "metadata",
]
