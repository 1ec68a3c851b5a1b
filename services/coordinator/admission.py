"""What can be known at submit about whether a job can run, checked against the registered parties.

A job that names a dataset no registered party declares, or a party that never
registered, would otherwise be accepted and fail a minute later with a silent progress
bar. Registered-but-offline parties are not a reason to refuse: the job waits for them,
PENDING (see ``JobContext.waiting``).
"""

from __future__ import annotations

from collections.abc import Sequence

from fedcore.proto import coordinator_pb2 as pb


class JobRefused(Exception):
    """The job cannot run with the parties registered now (FAILED_PRECONDITION); the message says why."""


def check_model_source(spec: pb.HorizontalPredictSpec, source: pb.Job | None) -> None:
    """Raise JobRefused unless ``source`` (the job ``model_job_id`` names) has the model round asked for."""
    if source is None:
        raise JobRefused(f"horizontal_predict.model_job_id: no job {spec.model_job_id!r}")
    if not source.spec.HasField("horizontal"):
        raise JobRefused(f"job {spec.model_job_id} is a {source.spec.WhichOneof('kind')} job; horizontal_predict "
                         "scores with a horizontal job's global model (vertical models: vertical_predict)")
    if source.spec.horizontal.model.type == pb.MODEL_TYPE_VECTOR:
        raise JobRefused(f"job {spec.model_job_id} trains a 'vector' model, which depends on no data: it scores nothing")
    if source.current_round < 1:
        raise JobRefused(f"job {spec.model_job_id} has committed no round yet: it has no model to score with")
    if spec.model_round > source.current_round:
        raise JobRefused(f"job {spec.model_job_id} has committed rounds 1..{source.current_round}, "
                         f"not round {spec.model_round}")


def check_runnable(spec: pb.JobSpec, parties: Sequence[pb.PartyInfo]) -> None:
    """Raise JobRefused, naming the dataset or party, when ``spec`` cannot run on ``parties``."""
    declared = {p.party_id: {d.name for d in p.datasets} for p in parties}
    kind = spec.WhichOneof("kind")
    if kind == "horizontal":
        _check_horizontal(spec.horizontal, declared)
    elif kind == "horizontal_predict":
        body = spec.horizontal_predict
        for party in body.parties:
            _check_declares(declared, party, body.dataset, "party")
        if not body.parties and not any(body.dataset in names for names in declared.values()):
            raise JobRefused(f"no registered party declares dataset {body.dataset!r}; {_inventory(declared)}")
    elif kind in ("vertical", "vertical_predict"):
        body = spec.vertical if kind == "vertical" else spec.vertical_predict
        _check_declares(declared, body.guest, body.guest_dataset, "guest")
        for host in body.hosts:
            _check_declares(declared, host, body.host_dataset, "host")


def _check_horizontal(spec: pb.HorizontalJobSpec, declared: dict[str, set[str]]) -> None:
    holders = sorted(p for p, names in declared.items() if spec.dataset in names)
    if not holders:
        raise JobRefused(f"no registered party declares dataset {spec.dataset!r}; {_inventory(declared)}")
    if spec.min_parties > len(holders):
        raise JobRefused(
            f"min_parties={spec.min_parties} but only {len(holders)} registered "
            f"part{'y' if len(holders) == 1 else 'ies'} declare dataset {spec.dataset!r} ({', '.join(holders)})"
        )


def _check_declares(declared: dict[str, set[str]], party_id: str, dataset: str, role: str) -> None:
    if party_id not in declared:
        known = ", ".join(sorted(declared)) or "none"
        raise JobRefused(f"{role} {party_id!r} was never registered (registered parties: {known})")
    if dataset not in declared[party_id]:
        have = ", ".join(sorted(declared[party_id])) or "none"
        raise JobRefused(f"{role} {party_id!r} declares no dataset {dataset!r} (it declares: {have})")


def _inventory(declared: dict[str, set[str]]) -> str:
    if not declared:
        return "no party is registered yet"
    return "registered: " + "; ".join(f"{p}: {', '.join(sorted(n)) or 'no datasets'}" for p, n in sorted(declared.items()))
