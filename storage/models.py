"""Every table, imported in one place so Alembic and the tests see the whole schema."""

from sqlmodel import SQLModel

from storage.activity import MemberActivity
from storage.admins import GroupAdmin
from storage.audit import AuditEntry
from storage.groups import Group, Member, Membership
from storage.inbox import InboxMessage
from storage.kv import AccessToken, ApiFailure, Lease
from storage.points import PointsEntry
from storage.transcript import TranscriptMessage
from storage.welcome import PendingWelcome, PlatformWelcomeTemplate, WelcomeSettings

metadata = SQLModel.metadata

__all__ = [
    "AccessToken", "ApiFailure", "AuditEntry", "Group", "GroupAdmin", "InboxMessage", "Lease", "Member", "MemberActivity", "Membership",
    "PendingWelcome", "PlatformWelcomeTemplate", "PointsEntry", "TranscriptMessage", "WelcomeSettings", "metadata",
]
