"""S3's "Object Deleted" events on the local stack, which moto does not send.

S3 with EventBridge on sends "Object Deleted" (``deletion-type: "Delete Marker Created"``) when
``DeleteObject`` puts a delete marker in a versioned bucket, as ``aws s3 rm`` on the raw bucket
does; the data rule routes it to preprocess, which builds the dataset version without the file
(docs/decisions.md, "Per-file parts"). moto 5.2's ``S3Backend.delete_object`` makes the marker
but sends no event (its notifier runs only when the last version goes). ``emit_delete_markers``
wraps that method, once per process, to send the event S3 would send, through moto's own
EventBridge rules, as moto sends "Object Created": the rules' patterns decide who gets it.
"""

from __future__ import annotations

import copy
import hashlib
import time
from typing import Any

_MARK = "_sluice_emits_delete_markers"


def emit_delete_markers() -> None:
    """Idempotent: a second call leaves the first wrapper in place."""
    from moto.s3.models import S3Backend

    original = S3Backend.delete_object
    if getattr(original, _MARK, False):
        return

    def delete_object(
        self: Any,
        bucket_name: str,
        key_name: str,
        version_id: str | None = None,
        bypass: bool = False,
    ) -> Any:
        result = original(self, bucket_name, key_name, version_id=version_id, bypass=bypass)
        bucket = self.get_bucket(bucket_name)
        marker = result[1].get("version-id") if isinstance(result, tuple) else None
        config = bucket.notification_configuration
        if (
            version_id is None
            and bucket.is_versioned
            and marker is not None
            and config is not None
            and config.event_bridge is not None
        ):
            send_object_deleted(self.account_id, bucket, key_name, str(marker))
        return result

    setattr(delete_object, _MARK, True)
    S3Backend.delete_object = delete_object  # type: ignore[method-assign]


def object_deleted_event(
    account_id: str, region: str, bucket: str, key: str, marker: str
) -> dict[str, Any]:
    """The event S3 sends for a delete marker (events/s3_object_deleted.eventbridge.json)."""
    sequencer = hashlib.sha256(f"{bucket}/{key}/{marker}".encode()).hexdigest()[:16].upper()
    return {
        "version": "0",
        "id": hashlib.sha256(f"{sequencer}{time.time_ns()}".encode()).hexdigest()[:36],
        "detail-type": "Object Deleted",
        "source": "aws.s3",
        "account": account_id,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": region,
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": {"key": key, "version-id": marker, "sequencer": sequencer},
            "request-id": sequencer,
            "requester": account_id,
            "source-ip-address": "127.0.0.1",
            "reason": "DeleteObject",
            "deletion-type": "Delete Marker Created",
        },
    }


def send_object_deleted(account_id: str, bucket: Any, key: str, marker: str) -> None:
    from moto.events.models import events_backends

    event = object_deleted_event(account_id, bucket.region_name, bucket.name, key, marker)
    event["time"] = time.time()  # moto's rules take epoch seconds and write the ISO form out
    backend = events_backends[account_id][bucket.region_name]
    for event_bus in backend.event_buses.values():
        for rule in event_bus.rules.values():
            rule.send_to_targets(copy.deepcopy(event), transform_input=False)  # type: ignore[arg-type]
