"""Batch predictions: a file under ``<dataset>/batch/`` in the raw bucket is scored by the live
model in chunks, the predictions written under ``<dataset>/predictions/`` in the artifacts bucket
(functions/batch)."""

from __future__ import annotations

from aws_cdk import Duration
from constructs import Construct

from functions.shared.layout import BATCH_PREFIX, CONTRACT_FILE
from infra.aws.functions import Layers, SluiceFunction
from infra.aws.ingest import Ingest
from infra.aws.registry import Registry
from infra.aws.storage import Storage, grant_read, grant_write
from infra.topology import Topology, batch_event_pattern


class BatchPredictions(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        topology: Topology,
        storage: Storage,
        registry: Registry,
        ingest: Ingest,
        layers: Layers,
    ) -> None:
        super().__init__(scope, construct_id)
        self.batch = SluiceFunction(
            self,
            "Batch",
            topology=topology,
            name="batch",
            package="batch",
            handler="functions.batch.handler.lambda_handler",
            layers=layers,
            environment=topology.batch_environment(),
            memory_mb=3008,
            # the file is streamed from S3 and the parts staged in S3, so /tmp keeps Lambda's
            # default 512 MB; the 15 minutes bound the file (functions/batch/logic.py)
            timeout=Duration.minutes(15),
        )
        role = self.batch.role
        grant_read(role, storage.raw, f"*/{BATCH_PREFIX}*", f"*/{CONTRACT_FILE}")
        grant_read(role, storage.artifacts, "*/models/*")
        grant_write(role, storage.artifacts, "*/predictions/*")
        role.add_to_policy(registry.reader())
        self.rule = ingest.route(
            "BatchUploads",
            "Object Created under <dataset>/batch/ in the raw bucket → batch predictions",
            batch_event_pattern(topology),
            self.batch,
        )
