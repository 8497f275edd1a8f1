"""A build says what it cannot honour (WarningEvent events, run.json) and records the staging group and its tags."""

from __future__ import annotations

import json

import pytest

from aib_sdk.events import WarningEvent
from aib_sdk.testing.fakes import fake_template
from aib_sdk.testing.recorder import EventRecorder

pytestmark = pytest.mark.anyio


async def test_unhonoured_properties_are_warning_events_and_tags_are_recorded(
    run_build, aib_events: EventRecorder
) -> None:
    template = fake_template(steps=1, targets=1, name="tagged")
    props = template["properties"]
    props["vmProfile"] = {"userAssignedIdentities": ["/subscriptions/s/resourceGroups/r/providers/x/u"]}
    props["autoRun"] = {"state": "Enabled"}
    props["stagingResourceGroup"] = "/subscriptions/s/resourceGroups/aib-staging"
    props["managedResourceTags"] = {"team": "infra", "cost": "42"}
    template["location"] = "westeurope"
    result, _ = await run_build(template)
    assert result.run_state == "Succeeded", result.last_run_status.message
    messages = [e.message for e in aib_events.of_kind(WarningEvent)]
    assert any(m.startswith("properties.vmProfile.userAssignedIdentities: not applicable locally") for m in messages)
    assert any(m.startswith("properties.autoRun: not applicable locally") for m in messages)

    group = json.loads((result.staging_directory / "resource-group.json").read_text())
    assert group == {
        "stagingResourceGroup": "/subscriptions/s/resourceGroups/aib-staging",
        "location": "westeurope",
        "managedResourceTags": {"team": "infra", "cost": "42", "createdBy": "aib-sdk", "imageTemplateName": "tagged"},
        "exactStagingResourceGroup": str(result.staging_directory),
    }
    record = json.loads((result.staging_directory / "runs" / result.run_id / "run.json").read_text())
    details = record["details"]
    assert details["stagingResourceGroup"] == group["stagingResourceGroup"]
    assert details["managedResourceTags"] == group["managedResourceTags"]
    assert any("userAssignedIdentities" in w for w in details["warnings"])
