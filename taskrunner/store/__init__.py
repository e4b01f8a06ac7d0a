"""The only code that talks to Redis. `Store` is the typed operations on taskrunner's data,
assembled by concern (channels, the queue, liveness, reads, dead letters and jobs); every
public operation raises taskrunner's errors (StoreUnavailable, StoreRefusing, StoreError),
never Redis's. Keys and pub/sub notices: `keys`; URL forms: `urls`; connections: `connection`;
what operations return: `records`."""

from __future__ import annotations

from taskrunner.store.adopt import DEAD, MOVED, AdoptOps
from taskrunner.store.base import REQUEST_CONNECTIONS, Subscription
from taskrunner.store.channels import ChannelOps
from taskrunner.store.errors import translates_errors
from taskrunner.store.keys import Keys, Notice, schedule_notice
from taskrunner.store.kingtask import KingtaskOps
from taskrunner.store.listing import ListOps
from taskrunner.store.liveness import LivenessOps
from taskrunner.store.queue import QueueOps
from taskrunner.store.records import (
    DEAD_LETTER_RAW_BYTES,
    HANDED_BACK,
    Admission,
    ChannelSnapshot,
    Claimed,
    JobSummary,
    QueueCounts,
    TakenMessages,
    utf8_prefix,
)
from taskrunner.store.urls import redact_url

__all__ = [
    "DEAD",
    "DEAD_LETTER_RAW_BYTES",
    "HANDED_BACK",
    "MOVED",
    "REQUEST_CONNECTIONS",
    "Admission",
    "ChannelSnapshot",
    "Claimed",
    "JobSummary",
    "Keys",
    "Notice",
    "QueueCounts",
    "Store",
    "Subscription",
    "TakenMessages",
    "redact_url",
    "schedule_notice",
    "utf8_prefix",
]


@translates_errors
class Store(ChannelOps, AdoptOps, QueueOps, LivenessOps, KingtaskOps, ListOps):
    """Typed operations on taskrunner's Redis data. Owns its connection pool, a connection for
    the heartbeat alone, and the stores made by `for_requests` (closed with it)."""
