"""Users, groups and the permission rules of the engine.

The rules live here, not in the CLI, so an integrator calling :class:`engine.api.Engine` with an
acting user gets the same answers as an operator at the prompt:

- an unknown user is refused;
- ``claim`` / ``complete``: the task's candidate groups include one of the user's groups, or the
  task is assigned to the user; a task claimed by someone else is refused until a supervisor
  ``reassign``\\ s it; a task with neither candidate groups nor an assignee can only be routed
  by a supervisor;
- ``unclaim``: the assignee, or a supervisor;
- ``reassign``: a member of ``supervisor`` or ``dutySupervisor``;
- ``incident retry`` / ``incident resolve`` and ``cancel`` (a case): a member of ``admin``, ``supervisor``
  or ``dutySupervisor``;
- ``deploy``, ``migrate``, ``user``, ``db`` and ``run-due``: a member of ``admin``.

A call with ``user=None`` is a system or integrator call and is not checked. Every refusal is
a :class:`Refused` error; the engine records it as a ``refused`` history event in its own
small transaction after the refused command rolled back.

Atomicity: the functions taking a ``Session`` run inside the caller's transaction and write
nothing except where stated (:func:`add_user`, :func:`change_groups`); :func:`record_refusal`
opens and commits its own transaction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError

from .errors import InvalidInput, NotAllowed, NotFound
from .tables import app_user, app_user_group

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

    from .db import Store

ADMIN_GROUP = "admin"
SUPERVISOR_GROUPS = ("supervisor", "dutySupervisor")

#: action -> the groups of which the acting user must be a member (any one of them)
ACTION_GROUPS: dict[str, tuple[str, ...]] = {
    "deploy": (ADMIN_GROUP,),
    "migrate": (ADMIN_GROUP,),
    "user": (ADMIN_GROUP,),
    "db": (ADMIN_GROUP,),
    "run-due": (ADMIN_GROUP,),
    "reassign": SUPERVISOR_GROUPS,
    "audit": (ADMIN_GROUP, *SUPERVISOR_GROUPS),
    "incident": (ADMIN_GROUP, *SUPERVISOR_GROUPS),
    "cancel": (ADMIN_GROUP, *SUPERVISOR_GROUPS),
}

#: actions whose rules need the task (checked by the command that has it)
TASK_ACTIONS = frozenset({"claim", "unclaim", "complete", "reassign"})

#: how a refusal names an action
ACTION_WORDS = {"user": "manage users", "db": "manage the database", "run-due": "fire timers (run-due)",
                "reassign": "reassign tasks", "audit": "read the history across cases",
                "migrate": "migrate instances", "incident": "retry or resolve incidents",
                "cancel": "cancel cases"}

_NAME = re.compile(r"^[\w.@-]{1,200}$")


@dataclass(frozen=True)
class User:
    name: str
    groups: list[str]
    display_name: str | None = None
    created_at: datetime | None = None

    @property
    def is_admin(self) -> bool:
        return ADMIN_GROUP in self.groups

    @property
    def is_supervisor(self) -> bool:
        return any(g in self.groups for g in SUPERVISOR_GROUPS)

    def member_of(self, groups: Iterable[str]) -> bool:
        return any(g in self.groups for g in groups)


class Refused(NotAllowed):
    """The acting user may not do this. Recorded in history as a ``refused`` event."""

    def __init__(self, message: str, *, action: str, actor: str | None, instance_id: str | None = None,
                 task_id: str | None = None, bpmn_id: str | None = None):
        super().__init__(message)
        self.action = action
        self.actor = actor
        self.instance_id = instance_id
        self.task_id = task_id
        self.bpmn_id = bpmn_id


@dataclass
class TaskRef:
    """What the task rules need to know about a work item."""

    id: str
    instance_id: str
    bpmn_id: str
    name: str
    candidate_groups: list[str] = field(default_factory=list)
    assignee: str | None = None

    @classmethod
    def of(cls, row) -> TaskRef:
        return cls(row.id, row.instance_id, row.bpmn_id, row.name, list(row.candidate_groups or []), row.assignee)


# -- the directory ------------------------------------------------------------------------------
def check_name(name: str, what: str = "user name") -> str:
    name = (name or "").strip()
    if not _NAME.match(name):
        raise InvalidInput(f"{what} '{name}' is not valid: use letters, digits, '_', '.', '@' or '-' "
                           "(at most 200 characters)")
    return name


# The readers take an ORM session or a Core connection (Engine.tasks checks its user without the ORM).
def has_users(session: Session | Connection) -> bool:
    return session.scalar(select(app_user.c.name).limit(1)) is not None


def load_user(session: Session | Connection, name: str) -> User | None:
    row = session.execute(select(app_user.c.name, app_user.c.display_name, app_user.c.created_at)
                          .where(app_user.c.name == name)).first()
    if row is None:
        return None
    groups = sorted(session.scalars(select(app_user_group.c.group_name).where(app_user_group.c.user_name == name)))
    return User(row.name, groups, row.display_name, row.created_at)


def list_users(session: Session | Connection) -> list[User]:
    groups: dict[str, list[str]] = {}
    for user_name, group in session.execute(select(app_user_group.c.user_name, app_user_group.c.group_name)
                                            .order_by(app_user_group.c.user_name, app_user_group.c.group_name)):
        groups.setdefault(user_name, []).append(group)
    return [User(r.name, groups.get(r.name, []), r.display_name, r.created_at)
            for r in session.execute(select(app_user.c.name, app_user.c.display_name, app_user.c.created_at)
                                     .order_by(app_user.c.name))]


def add_user(session: Session, name: str, groups: Iterable[str], display_name: str | None, now: datetime,
             actor: str | None) -> User:
    """Insert a user with its groups and a ``user_added`` event (in the caller's transaction)."""
    from .store import EventRow, UserGroupRow, UserRow

    name = check_name(name)
    wanted = sorted({check_name(g, "group name") for g in groups})
    if session.get(UserRow, name) is not None:
        raise InvalidInput(f"user '{name}' already exists; change its groups with "
                           f"'gridflow user groups {name} --add GROUP'")
    session.add(UserRow(name=name, display_name=display_name, created_at=now))
    session.flush()
    for group in wanted:
        session.add(UserGroupRow(user_name=name, group_name=group))
    session.add(EventRow(instance_id=None, at=now, type="user_added", actor=actor,
                         data={"user": name, "groups": wanted, "display_name": display_name}))
    return User(name, wanted, display_name, now)


def change_groups(session: Session, name: str, add: Iterable[str], remove: Iterable[str], now: datetime,
                  actor: str | None) -> User:
    """Add and remove group memberships, with a ``user_groups_changed`` event (caller's transaction)."""
    from .store import EventRow, UserGroupRow

    user = load_user(session, name)
    if user is None:
        raise NotFound(f"no user '{name}'")
    added = sorted({check_name(g, "group name") for g in add} - set(user.groups))
    removed = sorted(set(remove) & set(user.groups))
    unknown = sorted(set(remove) - set(user.groups))
    if unknown:
        raise InvalidInput(f"user '{name}' is not in group(s) {', '.join(unknown)} (groups: "
                           f"{', '.join(user.groups) or 'none'})")
    for group in added:
        session.add(UserGroupRow(user_name=name, group_name=group))
    if removed:
        session.execute(delete(UserGroupRow).where(UserGroupRow.user_name == name,
                                                   UserGroupRow.group_name.in_(removed)))
    if added or removed:
        session.add(EventRow(instance_id=None, at=now, type="user_groups_changed", actor=actor,
                             data={"user": name, "added": added, "removed": removed}))
    return User(name, sorted((set(user.groups) | set(added)) - set(removed)), user.display_name, user.created_at)


# -- the rules ----------------------------------------------------------------------------------
def require_user(session: Session, name: str, action: str, instance_id: str | None = None,
                 task_id: str | None = None) -> User:
    """The acting user, or :class:`Refused` when the name is unknown."""
    user = load_user(session, name)
    if user is not None:
        return user
    if has_users(session):
        reason = f"unknown user '{name}'; an admin adds users with 'gridflow user add {name} --group GROUP'"
    else:
        reason = (f"unknown user '{name}': this database has no users yet; "
                  "create the first admin with 'gridflow db init --admin NAME'")
    raise Refused(reason, action=action, actor=name, instance_id=instance_id, task_id=task_id)


def require_groups(user: User, action: str) -> None:
    """Refuse ``action`` unless the user is in one of the groups :data:`ACTION_GROUPS` names for it."""
    needed = ACTION_GROUPS.get(action)
    if needed and not user.member_of(needed):
        raise Refused(f"{user.name} may not {ACTION_WORDS.get(action, action)}: that needs the group "
                      f"{' or '.join(needed)} "
                      f"({user.name} is in: {', '.join(user.groups) or 'no group'})", action=action, actor=user.name)


def may_work_on(user: User, task: TaskRef) -> bool:
    """True when the task is assigned to the user, or unassigned and offered to one of the user's groups."""
    if task.assignee:
        return task.assignee == user.name
    return user.member_of(task.candidate_groups)


def check_task(user: User, task: TaskRef, action: str) -> None:
    """The rule for ``claim`` and ``complete`` (see the module docstring); raises :class:`Refused`."""
    where = {"action": action, "actor": user.name, "instance_id": task.instance_id, "task_id": task.id,
             "bpmn_id": task.bpmn_id}
    label = f"task {task.id} ({task.name})"
    if task.assignee and task.assignee != user.name:
        raise Refused(f"{label} is assigned to {task.assignee}, not {user.name}; a supervisor can reassign it "
                      f"with 'gridflow reassign {task.id[:8]} --to {user.name}'", **where)
    if task.assignee == user.name:
        return
    if not task.candidate_groups:
        raise Refused(f"{label} has no candidate group; a supervisor routes it with 'gridflow reassign'", **where)
    if not user.member_of(task.candidate_groups):
        raise Refused(f"{label} is for group {', '.join(task.candidate_groups)}; {user.name} is in: "
                      f"{', '.join(user.groups) or 'no group'}", **where)


def check_unclaim(user: User, task: TaskRef) -> None:
    if task.assignee != user.name and not user.is_supervisor:
        raise Refused(f"task {task.id} ({task.name}) is assigned to {task.assignee}; only they or a supervisor "
                      "can unclaim it", action="unclaim", actor=user.name, instance_id=task.instance_id,
                      task_id=task.id, bpmn_id=task.bpmn_id)


# -- history of refusals ------------------------------------------------------------------------
def record_refusal(store: Store, at: datetime, refused: Refused) -> None:
    """Append a ``refused`` event in its own transaction (the refused command has rolled back).

    A database error here is swallowed: the refusal itself is what the caller must see.
    """
    from .store import EventRow

    try:
        with store.write() as session:
            session.add(EventRow(instance_id=refused.instance_id, at=at, type="refused", actor=refused.actor,
                                 task_id=refused.task_id, bpmn_id=refused.bpmn_id,
                                 data={"action": refused.action, "reason": str(refused)}))
    except SQLAlchemyError:  # pragma: no cover - the database went away between the two transactions
        pass
