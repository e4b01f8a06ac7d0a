"""Every Redis key and pub/sub channel name taskrunner uses, and the pub/sub notices decoded:
the Lua scripts publish them (`PUBLISH` in taskrunner/lua/), this module reads them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from taskrunner.validation import validate_channel_name


@dataclass(frozen=True, slots=True)
class Keys:
    """Every Redis key and pub/sub channel name taskrunner uses, in one place. A channel's keys
    are only built for a valid channel name (InvalidChannel otherwise)."""

    prefix: str = "task"

    @property
    def prepare_queue(self) -> str:
        return f"{self.prefix}:prepare:queue"

    def prepare_inflight(self, runner_id: str) -> str:
        return f"{self.prefix}:prepare:inflight:{runner_id}"

    @property
    def channels(self) -> str:
        return f"{self.prefix}:channels"

    def queue(self, channel: str) -> str:
        return f"{self.prefix}:queue:{validate_channel_name(channel)}"

    def scheduled(self, channel: str) -> str:
        return f"{self.prefix}:scheduled:{validate_channel_name(channel)}"

    def running(self, channel: str) -> str:
        return f"{self.prefix}:running:{validate_channel_name(channel)}"

    def distinct(self, channel: str) -> str:
        return f"{self.prefix}:distinct:{validate_channel_name(channel)}"

    def recent(self, channel: str) -> str:
        return f"{self.prefix}:recent:{validate_channel_name(channel)}"

    @property
    def job_index(self) -> str:
        """Every job's id by creation time (microseconds): the listing's index."""
        return f"{self.prefix}:index:jobs"

    def channel_job_index(self, channel: str) -> str:
        """A channel's jobs by creation time, as `job_index`."""
        return f"{self.prefix}:index:jobs:{validate_channel_name(channel)}"

    @property
    def index_built(self) -> str:
        """Set once the jobs created before the job index were indexed (`index_earlier_jobs`)."""
        return f"{self.prefix}:index:built"

    @property
    def index_sweep(self) -> str:
        """Where enqueue.lua's sweep of each job index has got to (a rank per index)."""
        return f"{self.prefix}:index:sweep"

    @property
    def dead_jobs(self) -> str:
        return f"{self.prefix}:dead"

    @property
    def job_prefix(self) -> str:
        return f"{self.prefix}:job:"

    def job(self, job_id: str) -> str:
        return f"{self.job_prefix}{job_id}"

    @property
    def runners(self) -> str:
        return f"{self.prefix}:runners"

    @property
    def epoch(self) -> str:
        return f"{self.prefix}:epoch"

    @property
    def liveness(self) -> str:
        return f"{self.prefix}:runners:liveness"

    def runner_jobs(self, runner_id: str) -> str:
        return f"{self.prefix}:runner:{runner_id}:jobs"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}:dead_letters"

    @property
    def stats(self) -> str:
        return f"{self.prefix}:stats"

    def daily(self, date: str) -> str:
        return f"{self.prefix}:daily:{date}"

    def kingtask_inflight(self, runner_id: str) -> str:
        """kingtask requests a runner claimed and has not admitted yet (their uuids)."""
        return f"{self.prefix}:kingtask:inflight:{runner_id}"

    # kingtask's own keys, named as upstream names them (no prefix: its producers and readers
    # use them as they are; config/const.go of linlams/kingtask and the-no/kingtask)
    @property
    def kingtask_requests(self) -> str:
        return "request_uuid_set"

    @property
    def kingtask_request_prefix(self) -> str:
        return "t_"

    def kingtask_result(self, uuid: str) -> str:
        return f"r_{uuid}"

    def kingtask_daily(self, succeeded: bool, date: str) -> str:
        """the-no/kingtask's daily counters: `success_task_count:2006-01-02`, `fail_...`."""
        return f"{'success' if succeeded else 'fail'}_task_count:{date}"

    # pub/sub channels
    @property
    def wake_events(self) -> str:
        return f"{self.prefix}:events:wake"

    @property
    def schedule_events(self) -> str:
        return f"{self.prefix}:events:schedule"

    @property
    def job_events(self) -> str:
        return f"{self.prefix}:events:job"

    @property
    def channel_events(self) -> str:
        return f"{self.prefix}:events:channels"

    @property
    def cancel_events(self) -> str:
        return f"{self.prefix}:events:cancel"

    @property
    def dead_letter_events(self) -> str:
        return f"{self.prefix}:events:dead_letters"

    def topic(self, channel: str) -> str:
        """Which notices a pub/sub channel carries: 'job', 'wake', 'schedule', 'channels',
        'cancel', 'dead_letters', or '' for a channel not taskrunner's."""
        return {
            self.job_events: "job",
            self.wake_events: "wake",
            self.schedule_events: "schedule",
            self.channel_events: "channels",
            self.cancel_events: "cancel",
            self.dead_letter_events: "dead_letters",
        }.get(channel, "")


@dataclass(frozen=True, slots=True)
class Notice:
    """One message of a subscription, decoded. `kind`: 'message' (a notice published on
    `channel`, of `topic`: see Keys.topic) or 'pong' (the answer to `Subscription.ping`, `data`
    its mark). `data` as the Lua scripts publish it: see `job` and `queue`."""

    kind: str
    channel: str
    topic: str
    data: str

    @classmethod
    def decode(cls, message: dict[str, Any], keys: Keys) -> Notice:
        channel = _text(message.get("channel"))
        return cls(_text(message["type"]), channel, keys.topic(channel), _text(message["data"]))

    def job(self) -> tuple[str, str]:
        """(job id, its new state) of a 'job' notice ("<id> <state>")."""
        job_id, _, state = self.data.partition(" ")
        return job_id, state

    def queue(self) -> tuple[str, str]:
        """(channel, due time in ms or '') of a 'wake' notice ("<channel>") or a 'schedule'
        one ("<channel> <due ms>"). A channel name may hold spaces: see `schedule_notice`."""
        if self.topic == "schedule":
            return schedule_notice(self.data)
        return self.data, ""


def schedule_notice(data: str) -> tuple[str, str]:
    """(channel, due ms) of a schedule notice "<channel> <due ms>": split at the LAST space,
    the channel name (`my chan`) may hold some; the number never does."""
    channel, _, due_ms = data.rpartition(" ")
    return channel, due_ms


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
