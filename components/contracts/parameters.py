"""Step parameters, declared once: a frozen dataclass per step whose fields carry their help text.

Each step's dataclass lives next to its component (`components.train.training.TrainParameters`,
`components.prepare.dataset.PrepareParameters`, ...; score's in `components.score.parameters`, beside
the run it configures), so the component takes its keyword defaults from the same fields the
command line and the Kubeflow tasks are generated from:

- `jobs.entrypoint.new_parser(..., parameters=TrainParameters)` adds one flag per field: the flag
  name from the field name (`min_accuracy` -> `--min-accuracy`), its type, choices, whether it
  is required (a field without a default), the `uri` check for location fields, and the help
  text with the default appended;
- `jobs.pipelines` makes the fields marked `tuning` optional inputs of the step's KFP
  component and pipeline (left off the command line when a run does not set them);
- components name a field in their messages through `flag_of`, never a hand-written flag.

This module holds only the mechanism and imports nothing of the steps, so declaring a step's
parameters costs its module no import.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator, Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One step parameter as the CLI and KFP see it (a dataclass field, its metadata, its type)."""

    name: str
    kind: type  # str, int, float or bool; `X | None` is X, optional
    help: str
    required: bool
    default: Any
    default_help: str | None  # how the default reads in --help when it is not a plain value
    choices: tuple[str, ...]
    location: bool  # a local path or URI, checked by the storage layer
    tuning: bool  # an optional input of the step's KFP task
    positional: bool
    deprecated_aliases: tuple[str, ...]
    exclusive_group: str | None

    @property
    def flag(self) -> str:
        return flag_of(self.name)

    def help_with_default(self) -> str:
        """The help text, with the default appended: `... (default 0.85)`."""
        if self.required or self.kind is bool:
            return self.help
        if self.default_help is not None:
            return f"{self.help} (default: {self.default_help})"
        if self.default is None:
            return self.help
        return f"{self.help} (default {self.default})"


def parameter(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    default_help: str | None = None,
    choices: Sequence[str] = (),
    location: bool = False,
    tuning: bool = False,
    positional: bool = False,
    deprecated_aliases: Sequence[str] = (),
    exclusive_group: str | None = None,
) -> Any:
    """A dataclass field of a step parameter. No default: a required parameter."""
    metadata = {
        "help": help,
        "default_help": default_help,
        "choices": tuple(choices),
        "location": location,
        "tuning": tuning,
        "positional": positional,
        "deprecated_aliases": tuple(deprecated_aliases),
        "exclusive_group": exclusive_group,
    }
    return dataclasses.field(default=default, metadata=metadata)


def flag_of(name: str) -> str:
    """The command-line flag of a parameter (`batch_size` -> `--batch-size`): how messages name it."""
    return "--" + name.replace("_", "-")


def parameters_of(cls: type) -> Iterator[Parameter]:
    """The parameters of a step's dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind = _plain_type(hints[field.name])
        required = field.default is dataclasses.MISSING
        yield Parameter(
            name=field.name,
            kind=kind,
            required=required,
            default=None if required else field.default,
            **{key: field.metadata[key] for key in _METADATA_KEYS},
        )


def tuning_parameters(cls: type) -> list[Parameter]:
    """The parameters a pipeline run may set on the step's task (optional KFP inputs)."""
    return [parameter for parameter in parameters_of(cls) if parameter.tuning]


def defaults_of(cls: type) -> dict[str, Any]:
    """name -> default of every optional parameter (what the component uses when a flag is unset)."""
    return {parameter.name: parameter.default for parameter in parameters_of(cls) if not parameter.required}


_METADATA_KEYS = (
    "help",
    "default_help",
    "choices",
    "location",
    "tuning",
    "positional",
    "deprecated_aliases",
    "exclusive_group",
)


def _plain_type(annotation: Any) -> type:
    """X of `X` or `X | None`."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [member for member in typing.get_args(annotation) if member is not type(None)]
        if len(members) != 1:
            raise TypeError(f"{annotation}: a parameter has one type, optionally `| None`")
        return members[0]
    return annotation
