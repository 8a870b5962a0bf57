"""The promotion lease: one holder at a time on any backend, and a dead holder's lease breaks."""

from __future__ import annotations

import threading
import time

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from crossfuse.errors import UserError
from crossfuse.registry.lease import EXPIRES, OWNER, lease_name, promotion_lease
from crossfuse.registry.register import registered_names


@pytest.fixture
def client(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return MlflowClient()


def test_one_holder_at_a_time_and_nothing_left_after(client):
    inside, most, errors = [0], [0], []
    guard = threading.Lock()

    def hold():
        try:
            with promotion_lease(MlflowClient(), "m", poll=0.02):
                with guard:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                time.sleep(0.05)
                with guard:
                    inside[0] -= 1
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=hold) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and most[0] == 1
    assert registered_names(client) == []  # released, and never listed as a model


def test_a_dead_holders_lease_is_broken_after_it_expires(client):
    client.create_registered_model(lease_name("m"), tags={OWNER: "pod-that-died",
                                                          EXPIRES: str(time.time() - 1)})
    with promotion_lease(client, "m", poll=0.02) as owner:
        assert client.get_registered_model(lease_name("m")).tags[OWNER] == owner


def test_a_live_holder_is_waited_for_then_named(client):
    client.create_registered_model(lease_name("m"), tags={OWNER: "busy-pod",
                                                          EXPIRES: str(time.time() + 60)})
    with pytest.raises(UserError, match="busy-pod"), promotion_lease(client, "m", wait=0.3,
                                                                     poll=0.05):
        pass
