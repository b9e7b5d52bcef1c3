"""Experts whose ``opinion_schema`` is not JSON Schema (for bad_opinion_schemas.yaml)."""


def misspelt_type(text):
    """Declares a JSON Schema type that does not exist."""
    return {"x": 1}


misspelt_type.opinion_schema = {"type": "objekt"}


def schema_a_list(text):
    """Declares a list where a schema object belongs."""
    return {"x": 1}


schema_a_list.opinion_schema = ["x"]


def minimum_a_string(text):
    """Declares a minimum that is not a number."""
    return {"x": 1}


minimum_a_string.opinion_schema = {"type": "object", "properties": {"x": {"minimum": "zero"}}}
