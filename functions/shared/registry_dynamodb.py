"""The model registry on one DynamoDB table: one partition per dataset, conditional writes.

Every item of a dataset shares the partition key ``pk`` = dataset name, so one Query reads a
dataset's versions or audit trail and one TransactWriteItems changes several of its items at
once. The sort key ``sk`` says what the item is:

- ``MODEL#0000000007``: a version record (zero-padded, so sort-key order is version order);
- ``LIVE``: the live pointer, the only item the inference function reads (one GetItem);
- ``COUNTER``: the last version number handed out;
- ``RUN#<run name>``: the version a run registered, which makes ``register`` idempotent;
- ``AUDIT#<UTC timestamp>#<sequence>``: the audit trail, in the order it was written;
- ``RETIRED``: present while an operator has retired the dataset.

docs/registry.md explains each condition. Numbers travel as strings (``{"N": "0.93"}``) through
the low-level client, ``summary`` as a JSON string, so no ``Decimal`` leaks into the records.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, Literal

from botocore.exceptions import ClientError

from functions.shared.registry import (
    AuditAction,
    AuditEntry,
    DatasetRetirement,
    InvalidTransitionError,
    LivePointer,
    ModelRegistry,
    ModelStatus,
    ModelVersion,
    ModelVersionNotFoundError,
    NewModelVersion,
    PromotionConflictError,
    RegistryError,
)

TABLE_KEY_SCHEMA: list[dict[str, str]] = [
    {"AttributeName": "pk", "KeyType": "HASH"},
    {"AttributeName": "sk", "KeyType": "RANGE"},
]
TABLE_ATTRIBUTES: list[dict[str, str]] = [
    {"AttributeName": "pk", "AttributeType": "S"},
    {"AttributeName": "sk", "AttributeType": "S"},
]

LIVE = "LIVE"
COUNTER = "COUNTER"
MODEL_PREFIX = "MODEL#"
RUN_PREFIX = "RUN#"
AUDIT_PREFIX = "AUDIT#"
RETIRED = "RETIRED"
_BATCH_WRITE_LIMIT = 25  # items per BatchWriteItem

# A condition can fail because another writer got there first (ConditionalCheckFailed) or because
# another transaction held one of the items at that moment (TransactionConflict): both mean "read
# again and decide", anything else is a real error.
_RETRYABLE_REASONS = frozenset({"ConditionalCheckFailed", "TransactionConflict"})
_MAX_ATTEMPTS = 5
_JSON_FIELDS = frozenset({"summary", "gate_reasons"})


def create_table(client: Any, table_name: str) -> None:
    """Create the registry table (on-demand capacity) and wait until it can be used.

    The local stack and the tests call this; the CDK stack declares the same key schema from
    ``TABLE_KEY_SCHEMA`` and ``TABLE_ATTRIBUTES``.
    """
    client.create_table(
        TableName=table_name,
        KeySchema=TABLE_KEY_SCHEMA,
        AttributeDefinitions=TABLE_ATTRIBUTES,
        BillingMode="PAY_PER_REQUEST",
    )
    client.get_waiter("table_exists").wait(
        TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )


def model_key(version: int) -> str:
    return f"{MODEL_PREFIX}{version:010d}"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class DynamoDBRegistry(ModelRegistry):
    """``ModelRegistry`` on the table ``create_table`` makes.

    Parameters
    ----------
    client
        A boto3 DynamoDB *client* (not a resource): the low-level API keeps numbers as strings,
        so floats never meet ``Decimal``.
    table_name
        The registry table (``Topology.registry_table``).
    clock
        Returns the current, timezone-aware time; injectable so tests can freeze it.
    """

    def __init__(
        self, client: Any, table_name: str, clock: Callable[[], datetime] = _utc_now
    ) -> None:
        self._db = client
        self._table = table_name
        self._clock = clock
        # Orders audit entries written by this process within one clock tick; itertools.count is
        # atomic under the GIL, so threads sharing the registry get distinct numbers.
        self._audit_sequence = itertools.count()

    # -- writes ---------------------------------------------------------------------------------

    def register(self, new: NewModelVersion, *, actor: str) -> ModelVersion:
        """Allocate the next number, then write run, version and audit entry in one transaction.

        The run item's ``attribute_not_exists`` condition is what makes a concurrent duplicate of
        the same run lose: it then returns the winner's version (its own number stays unused).
        A transaction cancelled while another one held the run item (``TransactionConflict``)
        is tried again once we know no winner exists.
        """
        existing = self._run_version(new.dataset, new.run_name)
        if existing is not None:
            return self.get(new.dataset, existing)
        number = self._db.update_item(
            TableName=self._table,
            Key=item_key(new.dataset, COUNTER),
            UpdateExpression="ADD last_version :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
            ReturnValues="UPDATED_NEW",
        )["Attributes"]["last_version"]["N"]
        now = self._clock()
        record = ModelVersion(
            **new.model_dump(),
            version=int(number),
            status=ModelStatus.CANDIDATE,
            created_at=now,
            updated_at=now,
        )
        not_there = "attribute_not_exists(pk)"
        items = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": item_key(new.dataset, RUN_PREFIX + new.run_name)
                    | {"version": _number(record.version)},
                    "ConditionExpression": not_there,
                }
            },
            {
                "Put": {
                    "TableName": self._table,
                    "Item": _version_item(record),
                    "ConditionExpression": not_there,
                }
            },
            self._audit_put(
                new.dataset,
                "registered",
                record.version,
                actor,
                f"run {new.run_name} registered a candidate",
                run_name=new.run_name,
                at=now,
            ),
        ]
        for _ in range(_MAX_ATTEMPTS):
            if self._transact(items):
                return record
            winner = self._run_version(new.dataset, new.run_name)
            if winner is not None:
                return self.get(new.dataset, winner)
        raise RegistryError(
            f"could not record version {record.version} of '{new.dataset}' for run "
            f"'{new.run_name}' after {_MAX_ATTEMPTS} attempts"
        )

    def promote(
        self,
        dataset: str,
        version: int,
        *,
        expected_live: int | None,
        actor: str,
        reason: str,
        force: bool = False,
        action: Literal["promoted", "rolled_back"] = "promoted",
    ) -> LivePointer:
        """Move the pointer, mark the version live and retire the previous one, atomically.

        A consistent snapshot (TransactGetItems) gives the caller a precise error and gives us
        the pointer's ``generation``; the transaction's conditions then guarantee nothing moved
        between that read and the write. When a condition fails we read again and decide: the
        pointer moved (``PromotionConflictError``), the status changed
        (``InvalidTransitionError``), or only the generation moved while the version is still
        the expected one (a promote-then-rollback in between), in which case we try again.
        """
        allowed = [ModelStatus.CANDIDATE, ModelStatus.RETIRED]
        if force:
            allowed.append(ModelStatus.REJECTED)
        for _ in range(_MAX_ATTEMPTS):
            target, current = self._snapshot(dataset, version)
            _check_promotion(dataset, target, current, expected_live, allowed)
            now = self._clock()
            pointer = LivePointer(
                dataset=dataset,
                version=version,
                sha256=target.sha256,
                model_uri=target.model_uri,
                card_uri=target.card_uri,
                generation=1 if current is None else current.generation + 1,
                updated_at=now,
            )
            items = [
                self._pointer_update(pointer, current),
                self._status_update(
                    dataset, version, ModelStatus.LIVE, reason, now, allowed_from=allowed
                ),
            ]
            if current is not None:
                items.append(
                    self._status_update(
                        dataset,
                        current.version,
                        ModelStatus.RETIRED,
                        f"replaced by version {version}",
                        now,
                        allowed_from=[ModelStatus.LIVE],
                    )
                )
            items.append(
                self._audit_put(
                    dataset,
                    action,
                    version,
                    actor,
                    reason,
                    previous_live=None if current is None else current.version,
                    at=now,
                )
            )
            if self._transact(items):
                return pointer
        raise PromotionConflictError(
            f"'{dataset}': the live pointer kept changing; gave up after {_MAX_ATTEMPTS} attempts"
        )

    def reject(self, dataset: str, version: int, *, actor: str, reason: str) -> ModelVersion:
        """``candidate`` → ``rejected`` under the condition that it is still a candidate.

        Already rejected returns the record unchanged and writes nothing, so a Step Functions
        retry of the reject step is harmless.
        """
        for _ in range(_MAX_ATTEMPTS):
            target = self.get(dataset, version)
            if target.status is ModelStatus.REJECTED:
                return target
            if target.status is not ModelStatus.CANDIDATE:
                raise InvalidTransitionError(
                    f"version {version} of '{dataset}' is {target.status.value}; "
                    "only a candidate can be rejected"
                )
            now = self._clock()
            items = [
                self._status_update(
                    dataset,
                    version,
                    ModelStatus.REJECTED,
                    reason,
                    now,
                    allowed_from=[ModelStatus.CANDIDATE],
                ),
                self._audit_put(
                    dataset, "rejected", version, actor, reason, run_name=target.run_name, at=now
                ),
            ]
            if self._transact(items):
                return target.model_copy(
                    update={
                        "status": ModelStatus.REJECTED,
                        "status_reason": reason,
                        "updated_at": now,
                    }
                )
        raise InvalidTransitionError(
            f"version {version} of '{dataset}' kept changing status; gave up rejecting it"
        )

    def record_failure(self, dataset: str, run_name: str, *, actor: str, reason: str) -> None:
        put = self._audit_put(dataset, "run_failed", None, actor, reason, run_name=run_name)
        self._db.put_item(**put["Put"])

    def retire_dataset(self, dataset: str, *, actor: str, reason: str) -> DatasetRetirement:
        """Put ``RETIRED`` if absent, with its audit entry, in one transaction; a concurrent or
        earlier retirement wins and is returned."""
        existing = self.retirement(dataset)
        if existing is not None:
            return existing
        live = self.live(dataset)
        now = self._clock()
        retirement = DatasetRetirement(
            dataset=dataset,
            at=now,
            actor=actor,
            reason=reason,
            live_version=None if live is None else live.version,
        )
        items = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": retirement_item(retirement),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            self._audit_put(
                dataset,
                "dataset_retired",
                None,
                actor,
                reason,
                previous_live=retirement.live_version,
                at=now,
            ),
        ]
        if self._transact(items):
            return retirement
        winner = self.retirement(dataset)
        if winner is None:
            raise RegistryError(f"could not retire '{dataset}': the table kept changing")
        return winner

    def unretire_dataset(self, dataset: str, *, actor: str, reason: str) -> DatasetRetirement:
        existing = self.retirement(dataset)
        if existing is None:
            raise InvalidTransitionError(f"dataset '{dataset}' is not retired")
        items = [
            {
                "Delete": {
                    "TableName": self._table,
                    "Key": item_key(dataset, RETIRED),
                    "ConditionExpression": "attribute_exists(pk)",
                }
            },
            self._audit_put(dataset, "dataset_unretired", None, actor, reason),
        ]
        if not self._transact(items):
            raise InvalidTransitionError(f"dataset '{dataset}' is not retired")
        return existing

    def purge(self, dataset: str, *, actor: str, reason: str) -> int:
        """Query every item of the partition and delete them in batches of 25, then write the
        ``dataset_purged`` entry: the one record left, so the purge itself stays on record."""
        if self.retirement(dataset) is None:
            raise InvalidTransitionError(
                f"dataset '{dataset}' is not retired; retire it before purging it"
            )
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": dataset}},
            "ProjectionExpression": "pk, sk",
            "ConsistentRead": True,
        }
        keys = [item for page in _pages(self._db.query, request) for item in page]
        for start in range(0, len(keys), _BATCH_WRITE_LIMIT):
            pending: dict[str, Any] = {
                self._table: [
                    {"DeleteRequest": {"Key": key}}
                    for key in keys[start : start + _BATCH_WRITE_LIMIT]
                ]
            }
            for _ in range(_MAX_ATTEMPTS):
                pending = self._db.batch_write_item(RequestItems=pending).get(
                    "UnprocessedItems", {}
                )
                if not pending:
                    break
            else:
                raise RegistryError(
                    f"purge of '{dataset}' in {self._table}: DynamoDB left "
                    f"{len(pending[self._table])} deletions unprocessed after {_MAX_ATTEMPTS} tries"
                )
        put = self._audit_put(
            dataset, "dataset_purged", None, actor, f"{reason} ({len(keys)} records deleted)"
        )
        self._db.put_item(**put["Put"])
        return len(keys)

    # -- reads ----------------------------------------------------------------------------------

    def get(self, dataset: str, version: int) -> ModelVersion:
        item = self._get_item(dataset, model_key(version))
        if item is None:
            raise ModelVersionNotFoundError(f"no version {version} of dataset '{dataset}'")
        return _version_from_item(item)

    def versions(self, dataset: str) -> list[ModelVersion]:
        return [_version_from_item(item) for item in self._query(dataset, MODEL_PREFIX)]

    def datasets(self) -> list[str]:
        """Scan for the ``COUNTER`` items: a dataset has one as soon as it has a version.

        The table is small (a few items per model version) and this is an operator's command,
        so a Scan is cheaper than keeping an index.
        """
        found: set[str] = set()
        request: dict[str, Any] = {
            "TableName": self._table,
            "ProjectionExpression": "pk",
            "FilterExpression": "sk = :counter",
            "ExpressionAttributeValues": {":counter": {"S": COUNTER}},
            "ConsistentRead": True,
        }
        for page in _pages(self._db.scan, request):
            found.update(item["pk"]["S"] for item in page)
        return sorted(found)

    def active_datasets(self) -> list[str]:
        """One Scan for the ``COUNTER`` and ``RETIRED`` items: datasets with a version, less
        the retired ones."""
        counted: set[str] = set()
        retired: set[str] = set()
        request: dict[str, Any] = {
            "TableName": self._table,
            "ProjectionExpression": "pk, sk",
            "FilterExpression": "sk IN (:counter, :retired)",
            "ExpressionAttributeValues": {
                ":counter": {"S": COUNTER},
                ":retired": {"S": RETIRED},
            },
            "ConsistentRead": True,
        }
        for page in _pages(self._db.scan, request):
            for item in page:
                (retired if item["sk"]["S"] == RETIRED else counted).add(item["pk"]["S"])
        return sorted(counted - retired)

    def retirement(self, dataset: str) -> DatasetRetirement | None:
        """One GetItem of ``RETIRED``."""
        item = self._get_item(dataset, RETIRED)
        return None if item is None else DatasetRetirement(**_decode(item))

    def live(self, dataset: str) -> LivePointer | None:
        """One GetItem: what the inference function does on every model refresh."""
        item = self._get_item(dataset, LIVE)
        return None if item is None else LivePointer(**_decode(item))

    def audit(self, dataset: str) -> list[AuditEntry]:
        return [AuditEntry(**_decode(item)) for item in self._query(dataset, AUDIT_PREFIX)]

    # -- helpers --------------------------------------------------------------------------------

    def _snapshot(self, dataset: str, version: int) -> tuple[ModelVersion, LivePointer | None]:
        """The version and the live pointer as of one instant (TransactGetItems is serializable)."""
        responses = self._db.transact_get_items(
            TransactItems=[
                {"Get": {"TableName": self._table, "Key": item_key(dataset, model_key(version))}},
                {"Get": {"TableName": self._table, "Key": item_key(dataset, LIVE)}},
            ]
        )["Responses"]
        model_item, live_item = (response.get("Item") for response in responses)
        if model_item is None:
            raise ModelVersionNotFoundError(f"no version {version} of dataset '{dataset}'")
        pointer = None if live_item is None else LivePointer(**_decode(live_item))
        return _version_from_item(model_item), pointer

    def _transact(self, items: list[dict[str, Any]]) -> bool:
        """Run it; ``False`` when a condition or a concurrent transaction stopped it."""
        try:
            self._db.transact_write_items(TransactItems=items)
        except ClientError as error:
            reasons = cancellation_reasons(error)
            if not reasons or not _RETRYABLE_REASONS.intersection(reasons):
                raise
            return False
        return True

    def _pointer_update(self, pointer: LivePointer, current: LivePointer | None) -> dict[str, Any]:
        """Set the pointer iff it still shows exactly what the snapshot showed.

        Conditioning on ``generation`` as well as ``version`` makes the generation we return the
        one we wrote, even if a promotion and a rollback happened since our read.
        """
        values = _encode(pointer.model_dump(mode="json", exclude={"dataset"}))
        update: dict[str, Any] = {
            "TableName": self._table,
            "Key": item_key(pointer.dataset, LIVE),
            "UpdateExpression": "SET " + ", ".join(f"#{name} = :{name}" for name in values),
            "ExpressionAttributeNames": {f"#{name}": name for name in values},
            "ExpressionAttributeValues": {f":{name}": value for name, value in values.items()},
        }
        if current is None:
            update["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            update["ConditionExpression"] = "#version = :expected AND #generation = :seen"
            update["ExpressionAttributeValues"] |= {
                ":expected": _number(current.version),
                ":seen": _number(current.generation),
            }
        return {"Update": update}

    def _status_update(
        self,
        dataset: str,
        version: int,
        status: ModelStatus,
        reason: str,
        now: datetime,
        *,
        allowed_from: list[ModelStatus],
    ) -> dict[str, Any]:
        """Change a version's status iff its status is one the transition allows."""
        allowed = {f":from{i}": {"S": s.value} for i, s in enumerate(allowed_from)}
        return {
            "Update": {
                "TableName": self._table,
                "Key": item_key(dataset, model_key(version)),
                "UpdateExpression": "SET #status = :status, status_reason = :reason, "
                "updated_at = :now",
                "ConditionExpression": f"#status IN ({', '.join(allowed)})",
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": {
                    ":status": {"S": status.value},
                    ":reason": {"S": reason},
                    ":now": {"S": _iso(now)},
                }
                | allowed,
            }
        }

    def _audit_put(
        self,
        dataset: str,
        action: AuditAction,
        version: int | None,
        actor: str,
        reason: str,
        *,
        previous_live: int | None = None,
        run_name: str | None = None,
        at: datetime | None = None,
    ) -> dict[str, Any]:
        entry = AuditEntry(
            dataset=dataset,
            at=at or self._clock(),
            action=action,
            version=version,
            actor=actor,
            reason=reason,
            previous_live=previous_live,
            run_name=run_name,
        )
        utc = entry.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        sort_key = f"{AUDIT_PREFIX}{utc}#{next(self._audit_sequence):010d}"
        item = item_key(dataset, sort_key) | _encode(
            entry.model_dump(mode="json", exclude={"dataset"})
        )
        return {"Put": {"TableName": self._table, "Item": item}}

    def _run_version(self, dataset: str, run_name: str) -> int | None:
        item = self._get_item(dataset, RUN_PREFIX + run_name)
        return None if item is None else int(item["version"]["N"])

    def _get_item(self, dataset: str, sort_key: str) -> dict[str, Any] | None:
        response = self._db.get_item(
            TableName=self._table, Key=item_key(dataset, sort_key), ConsistentRead=True
        )
        item: dict[str, Any] | None = response.get("Item")
        return item

    def _query(self, dataset: str, prefix: str) -> Iterator[dict[str, Any]]:
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": {"S": dataset}, ":prefix": {"S": prefix}},
            "ConsistentRead": True,
        }
        for page in _pages(self._db.query, request):
            yield from page


def _check_promotion(
    dataset: str,
    target: ModelVersion,
    current: LivePointer | None,
    expected_live: int | None,
    allowed: list[ModelStatus],
) -> None:
    """Refuse a promotion, most telling reason first: pointer moved, already live, bad status."""
    actual = None if current is None else current.version
    if actual != expected_live:
        raise PromotionConflictError(
            f"'{dataset}': expected live version {expected_live}, found {actual}"
        )
    if target.status is ModelStatus.LIVE:
        raise InvalidTransitionError(f"version {target.version} of '{dataset}' is already live")
    if target.status not in allowed:
        raise InvalidTransitionError(
            f"version {target.version} of '{dataset}' is {target.status.value}; "
            "only an operator's forced promotion can put a rejected version live"
        )


def _pages(call: Callable[..., Any], request: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
    """Follow ``LastEvaluatedKey``: a Query or Scan page stops at 1 MB."""
    while True:
        response = call(**request)
        yield response.get("Items", [])
        if "LastEvaluatedKey" not in response:
            return
        request = request | {"ExclusiveStartKey": response["LastEvaluatedKey"]}


def cancellation_reasons(error: ClientError) -> list[str]:
    """The cancellation codes of a cancelled transaction, one per item, in request order."""
    if error.response.get("Error", {}).get("Code") != "TransactionCanceledException":
        return []
    reasons: list[dict[str, Any]] = error.response.get("CancellationReasons", [])
    return [str(reason.get("Code", "None")) for reason in reasons]


def item_key(dataset: str, sort_key: str) -> dict[str, Any]:
    return {"pk": {"S": dataset}, "sk": {"S": sort_key}}


def _number(value: int | float) -> dict[str, str]:
    return {"N": repr(value)}


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _version_item(record: ModelVersion) -> dict[str, Any]:
    fields = record.model_dump(mode="json", exclude={"dataset"})
    return item_key(record.dataset, model_key(record.version)) | _encode(fields)


def _version_from_item(item: dict[str, Any]) -> ModelVersion:
    return ModelVersion(**_decode(item))


def _encode(fields: dict[str, Any]) -> dict[str, Any]:
    """JSON-mode fields → attribute values: NULL for None, N for numbers, JSON text for nesting."""
    encoded: dict[str, Any] = {}
    for name, value in fields.items():
        if name in _JSON_FIELDS:
            encoded[name] = {"S": json.dumps(value, sort_keys=True)}
        elif value is None:
            encoded[name] = {"NULL": True}
        elif isinstance(value, bool) or not isinstance(value, int | float | str):
            raise TypeError(f"registry field {name!r} has no attribute encoding: {value!r}")
        elif isinstance(value, str):
            encoded[name] = {"S": value}
        else:
            encoded[name] = _number(value)
    return encoded


def _decode(item: dict[str, Any]) -> dict[str, Any]:
    """Attribute values → record fields; ``pk`` becomes ``dataset``, ``sk`` is dropped."""
    fields: dict[str, Any] = {"dataset": item["pk"]["S"]}
    for name, value in item.items():
        if name in ("pk", "sk"):
            continue
        if name in _JSON_FIELDS:
            fields[name] = json.loads(value["S"])
        elif "NULL" in value:
            fields[name] = None
        elif "N" in value:
            text = value["N"]
            fields[name] = int(text) if text.lstrip("-").isdigit() else float(text)
        else:
            fields[name] = value["S"]
    return fields


def retirement_item(retirement: DatasetRetirement) -> dict[str, Any]:
    """The ``RETIRED`` item that records a dataset's retirement."""
    fields = retirement.model_dump(mode="json", exclude={"dataset"})
    return item_key(retirement.dataset, RETIRED) | _encode(fields)


def retirements_from_items(items: Iterable[dict[str, Any]]) -> dict[str, DatasetRetirement]:
    """The retired datasets among raw table items, with who retired each, when and why (the
    snapshot reader's counterpart of ``retirement``)."""
    return {
        item["pk"]["S"]: DatasetRetirement(**_decode(item))
        for item in items
        if item.get("sk", {}).get("S") == RETIRED
    }


def records_from_items(
    items: Iterable[dict[str, Any]],
) -> tuple[dict[str, LivePointer], list[ModelVersion]]:
    """The live pointers (by dataset) and the model versions among raw table items, for a reader
    that holds the items but not the table (``sluice status`` over the local stack's snapshot)."""
    live: dict[str, LivePointer] = {}
    versions: list[ModelVersion] = []
    for item in items:
        sort_key = item.get("sk", {}).get("S", "")
        if sort_key == LIVE:
            pointer = LivePointer(**_decode(item))
            live[pointer.dataset] = pointer
        elif sort_key.startswith(MODEL_PREFIX):
            versions.append(_version_from_item(item))
    return live, versions
