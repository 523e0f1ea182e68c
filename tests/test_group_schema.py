"""Saved groups against the JSON Schema of the group file (atlasd/schemas/group.schema.json)."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest
import torch
from known_groups import so2

import atlasd
from atlasd.group_file import group_schema


def so3() -> torch.Tensor:
    """The three rotation generators of R^3, (3, 3, 3)."""
    eps = torch.zeros(3, 3, 3)
    for i, j, k in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
        eps[i, j, k], eps[i, k, j] = 1.0, -1.0
    return eps


def _validator() -> jsonschema.Draft202012Validator:
    schema = group_schema()
    jsonschema.Draft202012Validator.check_schema(schema)  # the schema itself is valid
    return jsonschema.Draft202012Validator(schema)


def _groups() -> dict[str, atlasd.DiscoveredGroup]:
    flip = torch.diag(torch.tensor([1.0, -1.0]))
    rot = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    return {
        "o2": atlasd.DiscoveredGroup(so2(), cosets=torch.stack([torch.eye(2), flip])),
        "so3_with_reps": atlasd.DiscoveredGroup(so3(), in_rep=so3(), out_rep=so3()),
        "discrete_only": atlasd.DiscoveredGroup(
            torch.zeros(0, 3, 3), cosets=torch.stack([torch.eye(3), rot])
        ),
        "with_metadata": atlasd.DiscoveredGroup(
            so2(), metadata={"dataset": "heat", "seed": 3, "wall_time_s": {"total": 1.5}}
        ),
    }


@pytest.mark.parametrize("name", sorted(_groups()))
def test_saved_groups_validate_and_load(name, tmp_path):
    group = _groups()[name]
    path = group.save(tmp_path / f"{name}.json")
    doc = json.loads(path.read_text())
    _validator().validate(doc)
    again = atlasd.load_group(path)
    assert again.dim == group.dim and again.n_components == group.n_components


def _o2_doc() -> dict:
    return _groups()["o2"].to_dict()


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda d: d.pop("format"), "format"),
        (lambda d: d.update(format="atlasd.group/2"), "format"),
        (lambda d: d.pop("cosets"), "cosets"),
        (lambda d: d.update(cosets=[]), "cosets"),
        (lambda d: d.update(algebra=[[["1", 0], [0, 1]]]), "algebra"),
        (lambda d: d.update(dim=-1), "dim"),
        (lambda d: d.update(in_rep="none"), "in_rep"),
        (lambda d: d.update(metadata=[1, 2]), "metadata"),
        (lambda d: d.update(extra_key=1), "extra_key"),
        (lambda d: (d.update(algebra=[]), d.pop("d")), "d"),
    ],
)
def test_schema_rejects_malformed_documents(change, where):
    doc = copy.deepcopy(_o2_doc())
    change(doc)
    errors = list(_validator().iter_errors(doc))
    assert errors, f"the schema accepted a document with a bad {where!r}"
    assert any(where in (str(e.path) + e.message) for e in errors)


def test_the_heat_groups_of_the_docs_validate():
    """The schema takes every field a discovery run writes (metadata included)."""
    group = atlasd.DiscoveredGroup(
        so2(),
        cosets=torch.stack([torch.eye(2), torch.diag(torch.tensor([1.0, -1.0]))]),
        metadata={"kind": "local", "settings": {"batch_size": 16}, "membership_tol": 0.15},
    )
    _validator().validate(group.to_dict())
