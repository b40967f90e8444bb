"""Hypothesis strategies for request bodies, generated from the OpenAPI document.

``from_schema`` understands the part of OpenAPI 3.0 schema objects that ccserver's document
uses ($ref, type, nullable, properties, required, additionalProperties, items, enum, anyOf,
oneOf, minimum, minLength, pattern, minItems, minProperties/maxProperties).  ``body_for``
mixes schema-valid bodies with mutated ones (wrong types, unknown keys, missing keys, random
JSON), because the property under test, "no 5xx", must hold for both.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

FIELDS = ["username", "state", "_id", "task_id", "task_group_id", "created_at", "tags", "x", "a.b", "trials"]
OPERATORS = [
    "$eq",
    "$ne",
    "$gt",
    "$in",
    "$nin",
    "$and",
    "$or",
    "$not",
    "$exists",
    "$regex",
    "$size",
    "$expr",
    "$sum",
    "$push",
    "$first",
    "$literal",
    "$where",
    "$function",
    "$lookup",
    "$unionWith",
    "$out",
    "$merge",
    "$accumulator",
    "$graphLookup",
    "$facet",
    "$documents",
    "$elemMatch",
    "$type",
]
STAGES = [
    "$match",
    "$project",
    "$limit",
    "$skip",
    "$count",
    "$sort",
    "$unwind",
    "$group",
    "$sample",
    "$replaceRoot",
    "$addFields",
    "$lookup",
    "$out",
    "$facet",
    "$set",
    "$unionWith",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["$username", "$$ROOT", "5a3f0c7e9d1b2c0012345678", "", "\x00"]),
)
keys = st.one_of(st.text(max_size=8), st.sampled_from(FIELDS + OPERATORS))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)


def resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def from_schema(schema: dict[str, Any], components: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    schema = resolve(schema, components)
    if depth > 8:
        return st.just({})
    if "anyOf" in schema or "oneOf" in schema:
        alternatives = schema.get("anyOf") or schema["oneOf"]
        options = [from_schema(resolve(o, components), components, depth) for o in alternatives]
        strategy = st.one_of(options)
    elif "enum" in schema:
        strategy = st.sampled_from(schema["enum"])
    else:
        strategy = _typed(schema, components, depth)
    if schema.get("nullable"):
        strategy = st.one_of(st.none(), strategy)
    return strategy


def _typed(schema: dict[str, Any], components: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
    kind = schema.get("type")
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        return st.text(min_size=schema.get("minLength", 0), max_size=20)
    if kind == "number":
        low = schema.get("minimum")
        return st.one_of(
            st.integers(min_value=int(low) + 1 if low is not None else None, max_value=2**40),
            st.floats(
                min_value=low,
                exclude_min=bool(schema.get("exclusiveMinimum")),
                allow_nan=False,
                allow_infinity=False,
                max_value=1e12,
            ),
        )
    if kind == "integer":
        return st.integers(min_value=schema.get("minimum"), max_value=2**40)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        items = from_schema(schema.get("items", {}), components, depth + 1) if schema.get("items") else json_values
        return st.lists(items, min_size=schema.get("minItems", 0), max_size=3)
    if kind == "object" or "properties" in schema:
        return _object(schema, components, depth)
    return json_values


def _object(schema: dict[str, Any], components: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
    properties = schema.get("properties")
    if not properties:
        low, high = schema.get("minProperties", 0), schema.get("maxProperties", 4)
        return st.dictionaries(keys, json_values, min_size=low, max_size=high)
    required = set(schema.get("required", ()))
    fields = {name: from_schema(sub, components, depth + 1) for name, sub in properties.items()}
    return st.fixed_dictionaries(
        {k: v for k, v in fields.items() if k in required},
        optional={k: v for k, v in fields.items() if k not in required},
    )


def pipelines() -> st.SearchStrategy[list[Any]]:
    """Pipelines biased towards real stage names and operators (allowed and denied)."""
    stage = st.builds(lambda name, value: {name: value}, st.sampled_from(STAGES), json_values)
    return st.lists(stage, max_size=4)


def mutate(body: Any) -> st.SearchStrategy[Any]:
    """Variants of a valid body that should be refused (or accepted) without a 5xx."""
    options: list[st.SearchStrategy[Any]] = [json_values]
    if isinstance(body, dict) and body:
        names = sorted(body)
        options += [
            st.sampled_from(names).map(lambda k: {n: v for n, v in body.items() if n != k}),
            st.tuples(st.sampled_from(names), json_values).map(lambda kv: {**body, kv[0]: kv[1]}),
            st.tuples(keys, json_values).map(lambda kv: {**body, kv[0]: kv[1]}),
        ]
    return st.one_of(options)


def body_for(schema: dict[str, Any], components: dict[str, Any], query: bool = False) -> st.SearchStrategy[Any]:
    valid = st.builds(lambda p: {"aggregate": p}, pipelines()) if query else from_schema(schema, components)
    return st.one_of(valid, valid, valid.flatmap(mutate))
