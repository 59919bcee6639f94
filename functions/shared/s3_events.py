"""Upload events in the two shapes S3 delivers them: EventBridge and classic notifications.

Both parse into ``UploadedObject``s with Powertools' parser models; anything that is not an
object upload (``s3:TestEvent``, a folder marker) parses to nothing, so the handler has nothing
to do.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.parser.models import (
    S3EventNotificationEventBridgeModel,
    S3Model,
)
from pydantic import BaseModel, ConfigDict, ValidationError

from functions.shared.errors import SluiceError


class EventShapeError(SluiceError):
    """The payload is not an S3 upload event in a shape sluice accepts."""


class UploadedObject(BaseModel):
    model_config = ConfigDict(frozen=True)

    bucket: str
    key: str
    size: int
    etag: str | None = None
    version_id: str | None = None
    sequencer: str | None = None

    def identity(self) -> str:
        """What this upload *means*: the same object version delivered twice is one upload."""
        return "|".join(
            [self.bucket, self.key, self.version_id or "", self.etag or "", self.sequencer or ""]
        )


class RemovedObject(BaseModel):
    """A data object deleted (a delete marker in a versioned bucket, or gone in another): the
    next dataset version is built without it."""

    model_config = ConfigDict(frozen=True)

    bucket: str
    key: str
    version_id: str | None = None  # of the delete marker, when S3 made one
    sequencer: str | None = None

    def identity(self) -> str:
        """Never equal to an upload's: a delete and an upload of one key are two events."""
        return "|".join(
            ["removed", self.bucket, self.key, self.version_id or "", self.sequencer or ""]
        )


def parse_removal_event(event: dict[str, Any]) -> list[RemovedObject]:
    """The objects an "Object Deleted" (EventBridge) or ``ObjectRemoved:*`` (notification)
    event names; any other event names none."""
    try:
        if event.get("detail-type") == "Object Deleted":
            detail = event["detail"]
            bucket, obj = detail["bucket"]["name"], detail["object"]
            removed = [
                RemovedObject(
                    bucket=bucket,
                    key=obj["key"],
                    version_id=obj.get("version-id"),
                    sequencer=obj.get("sequencer"),
                )
            ]
        elif "Records" in event:
            parsed = S3Model.model_validate(event)
            removed = [
                RemovedObject(
                    bucket=r.s3.bucket.name,
                    key=unquote_plus(r.s3.object.key),
                    version_id=r.s3.object.versionId,
                    sequencer=r.s3.object.sequencer,
                )
                for r in parsed.Records
                if r.s3.object is not None and r.eventName.startswith("ObjectRemoved")
            ]
        else:
            return []
    except (KeyError, TypeError) as exc:
        raise EventShapeError(f"malformed S3 delete event: no {exc}") from None
    except ValidationError as exc:
        raise EventShapeError(
            f"malformed S3 event: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
        ) from None
    return [r for r in removed if not r.key.endswith("/")]


def parse_upload_event(event: dict[str, Any]) -> list[UploadedObject]:
    if event.get("Event") == "s3:TestEvent":
        return []
    try:
        if "detail-type" in event:
            return _from_eventbridge(event)
        if "Records" in event:
            return _from_notification(event)
    except ValidationError as exc:
        raise EventShapeError(
            f"malformed S3 event: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
        ) from None
    raise EventShapeError("not an S3 event: expected EventBridge 'detail-type' or 'Records'")


def _from_eventbridge(event: dict[str, Any]) -> list[UploadedObject]:
    if event.get("detail-type") != "Object Created":
        return []
    parsed = S3EventNotificationEventBridgeModel.model_validate(event)
    obj = parsed.detail.object
    etag = obj.etag or event["detail"]["object"].get("eTag")
    return _keep_objects(
        [
            UploadedObject(
                bucket=parsed.detail.bucket.name,
                key=obj.key,
                size=int(obj.size or 0),
                etag=etag,
                version_id=obj.version_id,
                sequencer=obj.sequencer,
            )
        ]
    )


def _from_notification(event: dict[str, Any]) -> list[UploadedObject]:
    parsed = S3Model.model_validate(event)
    uploads = []
    for record in parsed.Records:
        obj = record.s3.object
        if obj is None or not record.eventName.startswith("ObjectCreated"):
            continue
        uploads.append(
            UploadedObject(
                bucket=record.s3.bucket.name,
                key=unquote_plus(obj.key),  # classic notifications URL-encode keys
                size=int(obj.size or 0),
                etag=obj.eTag,
                version_id=obj.versionId,
                sequencer=obj.sequencer,
            )
        )
    return _keep_objects(uploads)


def _keep_objects(objects: list[UploadedObject]) -> list[UploadedObject]:
    return [o for o in objects if not o.key.endswith("/")]
