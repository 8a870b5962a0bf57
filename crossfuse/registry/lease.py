"""A lease on a model's champion alias, kept in the registry itself: any tracking backend.

Promotion reads the champion, decides and moves the alias. Two runs doing that at once
could both read the same champion and both become it. MLflow has no conditional write, but
creating a registered model is create-if-absent on every backend (a unique name in the
server's database). The lease is therefore a registered model named
``<model>--promotion-lease``:

- **acquire**: create it with tags ``owner`` (host, process, a random id) and ``expires``
  (unix seconds), then read it back; if it exists, wait and try again.
- **release**: delete it, after reading back that we still own it.
- **a holder that died** (its lease expired): exactly one waiter may break it, the one that
  creates ``<lease>--break-<owner>``; it deletes the stale lease and its breaker, then
  competes for the lease like everyone else. A second waiter that saw the same stale lease
  cannot create the same breaker, so it never deletes the new holder's lease.

Example
-------
>>> with promotion_lease(MlflowClient(), "crossfuse-sample"):   # doctest: +SKIP
...     decide_and_move_aliases()
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Iterator

from mlflow.exceptions import MlflowException

from crossfuse.errors import UserError

log = logging.getLogger(__name__)

LEASE_SUFFIX = "--promotion-lease"
BREAK_INFIX = "--break-"
OWNER, EXPIRES = "crossfuse.lease.owner", "crossfuse.lease.expires"


def lease_name(model_name: str) -> str:
    """
    >>> lease_name("crossfuse-sample")
    'crossfuse-sample--promotion-lease'
    """
    return model_name + LEASE_SUFFIX


def is_lease(name: str) -> bool:
    """Whether a registered model is a lease (or a breaker), not a model: lists skip these."""
    return LEASE_SUFFIX in name


def _already_exists(exc: MlflowException) -> bool:
    return exc.error_code == "RESOURCE_ALREADY_EXISTS" or "already exists" in str(exc)


def _create(client, name: str, tags: dict[str, str]) -> bool:
    try:
        client.create_registered_model(name, tags=tags, description=(
            "crossfuse's promotion lease: held for seconds while a run decides whether to move "
            "the champion alias; deleted after. Not a model."))
        return True
    except MlflowException as exc:
        # "does not exist": a backend that reads the new model back found it deleted by the
        # holder releasing it meanwhile (seen on SQLite with threads). Not ours either way.
        if _already_exists(exc) or exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise


def _read(client, name: str) -> dict[str, str] | None:
    try:
        return dict(client.get_registered_model(name).tags)
    except MlflowException:
        return None


def _delete(client, name: str) -> None:
    with contextlib.suppress(MlflowException):  # already gone
        client.delete_registered_model(name)


def _break_if_stale(client, name: str, tags: dict[str, str], now: float) -> None:
    if float(tags.get(EXPIRES, "inf")) >= now:
        return
    owner = tags.get(OWNER, "unknown")
    breaker = f"{name}{BREAK_INFIX}{uuid.uuid5(uuid.NAMESPACE_OID, owner).hex[:16]}"
    if _create(client, breaker, {OWNER: "breaker"}):
        if (_read(client, name) or {}).get(OWNER) == owner:  # still the stale one
            log.warning("promotion lease %s of %s expired; broken", name, owner)
            _delete(client, name)
        _delete(client, breaker)


@contextlib.contextmanager
def promotion_lease(client, model_name: str, ttl: float = 300.0, wait: float = 600.0,
                    poll: float = 0.2) -> Iterator[str]:
    """Hold ``model_name``'s promotion lease for the block; yields the owner id.

    ``ttl``: seconds after which a lease whose holder died may be broken; ``wait``: how long
    to wait for it before giving up with a :class:`~crossfuse.errors.UserError`.
    """
    name = lease_name(model_name)
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    deadline = time.monotonic() + wait
    while True:
        now = time.time()
        if _create(client, name, {OWNER: owner, EXPIRES: f"{now + ttl:.3f}"}) and \
                (_read(client, name) or {}).get(OWNER) == owner:
            break
        tags = _read(client, name)
        if tags is not None:
            _break_if_stale(client, name, tags, time.time())
        if time.monotonic() > deadline:
            holder = (tags or {}).get(OWNER, "unknown")
            raise UserError(f"another run holds the promotion lease of {model_name!r} (owner "
                            f"{holder}) for over {wait:g} s; retry, or if no run is registering, "
                            f"delete the registered model {name!r}")
        time.sleep(poll * (0.5 + random.random()))
    try:
        yield owner
    finally:
        if (_read(client, name) or {}).get(OWNER) == owner:
            _delete(client, name)
        else:
            log.warning("promotion lease %s was no longer ours at release (held past its ttl)",
                        name)
