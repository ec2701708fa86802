"""Every table, imported in one place so Alembic and the tests see the whole schema."""

from sqlmodel import SQLModel

from storage.activity import MemberActivity
from storage.admins import GroupAdmin
from storage.audit import AuditEntry
from storage.checkin import Checkin, CheckinDayCount
from storage.faq import FaqCooldown, FaqEntry, FaqRevision, FaqUnanswered
from storage.groups import Group, Member, Membership
from storage.inbox import InboxMessage
from storage.kv import AccessToken, ApiFailure, Lease
from storage.lottery import Lottery, LotteryEntry, LotteryPrize, LotteryRound, LotteryWinner
from storage.points import PointsEntry
from storage.smartbot import SmartbotReply
from storage.transcript import TranscriptMessage
from storage.welcome import PendingWelcome, PlatformWelcomeTemplate, WelcomeSettings

metadata = SQLModel.metadata

__all__ = [
    "AccessToken", "ApiFailure", "AuditEntry", "Checkin", "CheckinDayCount", "FaqCooldown", "FaqEntry",
    "FaqRevision", "FaqUnanswered", "Group", "GroupAdmin", "InboxMessage", "Lease", "Lottery", "LotteryEntry", "LotteryPrize", "LotteryRound", "LotteryWinner", "Member", "MemberActivity", "Membership",
    "PendingWelcome", "PlatformWelcomeTemplate", "PointsEntry", "SmartbotReply", "TranscriptMessage", "WelcomeSettings", "metadata",
]
