"""Shared helper of the online-write tests: Feast's own serialized entity key."""

from __future__ import annotations

from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value


def feast_key(join_key: str, value: Value) -> bytes:
    return bytes(serialize_entity_key(EntityKey(join_keys=[join_key], entity_values=[value]), 3))
