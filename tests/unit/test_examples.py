"""The commented example configs and job files in examples/ load as the README says."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedcore.config import load_config

from fedsuite.arbiter import ArbiterConfig
from fedsuite.coordinator import CoordinatorConfig, specs
from fedsuite.jobfile import load_job_spec
from fedsuite.party import PartyConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name, kind", [("coordinator.yaml", CoordinatorConfig), ("arbiter.yaml", ArbiterConfig),
                                        ("party-a.yaml", PartyConfig), ("party-b.yaml", PartyConfig)])
def test_example_configs_load(name: str, kind: type) -> None:
    config = load_config(kind, EXAMPLES / name, environ={})
    assert config.tls is not None and config.node_id == name.removesuffix(".yaml")


@pytest.mark.parametrize("name", ["job-horizontal.yaml", "job-vertical.yaml"])
def test_example_jobs_are_valid(name: str) -> None:
    spec = specs.normalise(load_job_spec(EXAMPLES / name))
    parties = load_config(PartyConfig, EXAMPLES / "party-a.yaml", environ={}).datasets
    if spec.HasField("horizontal"):
        assert spec.horizontal.dataset in parties
    else:
        assert spec.vertical.guest_dataset in parties
        assert spec.vertical.host_dataset in load_config(PartyConfig, EXAMPLES / "party-b.yaml", environ={}).datasets
