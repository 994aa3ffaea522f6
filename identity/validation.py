"""Typed input: pydantic models of what arrives, and the one place that validates them.

A model says what each field is (its type, for the OpenAPI document too); the rules
of a value (an email's shape, a phone's digits) stay in ``identity.normalize``. Models
are strict (no coercion: ``"1"`` is not ``1``, ``true`` is not a phone) and forbid
unknown fields. :func:`check` turns a refusal into :class:`InvalidInput` naming the
field, so every entry point keeps the one error contract (``error`` plus ``field``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from identity.errors import InvalidInput

Model = TypeVar("Model", bound=BaseModel)


class Body(BaseModel):
    """A request body or message: strict types, unknown fields refused."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


@dataclass(frozen=True)
class Refusal:
    """What a field says when its value has the wrong type (pydantic's words name no field).

    A marker in the field's ``Annotated`` metadata, read only when validation fails: the
    accepted path pays nothing for it (a wrapping validator would cost a call per field).
    """

    message: str


EmailInput = Annotated[
    StrictStr | None,
    Refusal("email must be a string or null"),
    Field(description="Trimmed and lower-cased; must look like an address (a local part, "
          "one @, a domain)."),
]  # fmt: skip
PhoneInput = Annotated[
    StrictStr | Annotated[StrictInt, Field(ge=0)] | None,
    Refusal("phoneNumber must be a string, a non-negative integer or null"),
    Field(description="A string or a non-negative integer; spaces, dashes, dots and "
          "parentheses are dropped, a leading + kept; 3 to 20 digits must remain."),
]  # fmt: skip


def check(model: type[Model], data: object, *, what: str = "request body") -> Model:
    """``data`` as ``model``, or :class:`InvalidInput` saying what was wrong and where."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise invalid_input(error, model, what) from None


def invalid_input(error: ValidationError, model: type[BaseModel], what: str) -> InvalidInput:
    errors = error.errors(include_url=False, include_context=False, include_input=False)
    # Unknown fields first, all of them: a typo is the likeliest mistake.
    unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
    if unknown:
        return InvalidInput(f"unknown field(s): {', '.join(unknown)}", field=unknown[0])
    first = errors[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    if not first["loc"]:
        if first["type"] in {"model_type", "model_attributes_type", "dict_type"}:
            return InvalidInput(f"{what} must be a JSON object")
        return InvalidInput(message)
    field = str(first["loc"][0])
    info = model.model_fields.get(field)
    refusals = [m for m in info.metadata if isinstance(m, Refusal)] if info else []
    if refusals and first["type"] != "value_error":  # a validator's own words stay
        return InvalidInput(refusals[0].message, field=field)
    if field not in message:
        message = f"{field}: {message[:1].lower()}{message[1:]}"
    return InvalidInput(message, field=field)
