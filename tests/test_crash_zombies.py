"""Crashed runs are marked Crashed on a server (issue 22): ``zodi deploy`` registers Prefect's
zombie-detection automation (flow-run heartbeats stop → Crashed), idempotently; checked against
the test session's real Prefect server."""

from __future__ import annotations

from datetime import timedelta


def test_zombie_automation_is_registered_once_and_kept_in_shape(prefect_harness):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.events.schemas.automations import Posture

    from deployments.deploy import ZOMBIE_AUTOMATION, ensure_zombie_automation, zombie_after_s

    assert ensure_zombie_automation() in ("created", "unchanged")
    assert ensure_zombie_automation() == "unchanged"  # zodi deploy twice changes nothing
    with get_client(sync_client=True) as client:
        (automation,) = client.read_automations_by_name(ZOMBIE_AUTOMATION)
        trigger = automation.trigger
        assert automation.enabled and trigger.posture == Posture.Proactive
        assert trigger.after == {"prefect.flow-run.heartbeat"}
        assert {"prefect.flow-run.heartbeat", "prefect.flow-run.Completed"} <= trigger.expect
        assert trigger.for_each == {"prefect.resource.id"}
        # Three missed heartbeats of Prefect's period (PREFECT_FLOWS_HEARTBEAT_FREQUENCY).
        assert trigger.within == timedelta(seconds=zombie_after_s()) and zombie_after_s() >= 90
        (action,) = automation.actions
        assert action.type == "change-flow-run-state" and action.state == StateType.CRASHED

        client.pause_automation(automation.id)  # drifted on the server: deploy puts it back
    assert ensure_zombie_automation() == "updated"
    with get_client(sync_client=True) as client:
        (automation,) = client.read_automations_by_name(ZOMBIE_AUTOMATION)
        assert automation.enabled
