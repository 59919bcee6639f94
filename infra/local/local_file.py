"""``<state dir>/local.json``: where a running local stack can be reached.

``sluice up`` writes it; the operator commands (``models``, ``promote``, ``rollback``,
``predict``, ``retraining``) and ``sluice env`` read it. One model for both sides, so a field the
stack writes is a field the CLI can read.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from infra.local.snapshot import write_atomically

LOCAL_FILE = "local.json"


class LocalFileError(Exception):
    """local.json exists but cannot be read as one: the message names the file and why."""


class LocalEndpoints(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")  # an older CLI reads a newer file

    aws_endpoint_url: str
    api_url: str
    api_key: str
    api_ca_bundle: str | None = None  # with `sluice up --tls`: the CA file the API's clients trust
    region: str
    stage: str
    raw_bucket: str
    artifacts_bucket: str
    registry_table: str
    # the period of the retraining alarms' drift metrics (the stack's drift schedule): what
    # `sluice retire --undo` puts them back with, as promote put them
    alarm_period_seconds: int | None = None


def write_local_file(state_dir: Path, endpoints: LocalEndpoints) -> None:
    # It holds the API key: write_atomically's temporary file is created 0600, and the
    # replace keeps that mode, so only this user can read it (as the TLS key, tls.py).
    text = endpoints.model_dump_json(indent=2) + "\n"
    write_atomically(state_dir / LOCAL_FILE, text.encode())


def read_local_file(state_dir: Path) -> LocalEndpoints | None:
    """The endpoints of the stack last started with ``state_dir``; None when there is no file."""
    path = state_dir / LOCAL_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LocalFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return LocalEndpoints.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors()
        )
        raise LocalFileError(f"{path} is not a local stack's file ({problems})") from None
