"""Partition selection agrees with Spring's ``DefaultPartitionSelector`` for every key."""

from __future__ import annotations

from binder_core.expression import java_hash, select_partition
from binder_core.testing import TestApp


def test_a_key_hashing_to_integer_min_value_goes_to_partition_zero_as_in_spring() -> None:
    # Java: "polygenelubricants".hashCode() == Integer.MIN_VALUE, and Math.abs of it is
    # still negative, so Spring maps it to 0 first.
    assert java_hash("polygenelubricants") == -(2**31)
    for count in (2, 3, 5, 7, 12):
        assert select_partition("polygenelubricants", count) == 0


def test_other_keys_keep_abs_hash_modulo_count() -> None:
    assert select_partition("hello", 7) == 99162322 % 7
    assert select_partition(-42, 5) == 42 % 5


def test_integers_hash_as_jackson_would_hold_them() -> None:
    assert java_hash(2**31 - 1) == 2**31 - 1  # Integer
    assert java_hash(-(2**31)) == -(2**31)
    assert java_hash(2**32) == 1  # Long: (int) (v ^ (v >>> 32))
    assert java_hash(5_000_000_000) == 705032705
    assert java_hash(-5_000_000_000) == 705032702
    assert java_hash(2**64) == 961  # BigInteger: words [1, 0, 0]
    assert java_hash(-(2**64)) == -961


def test_a_lone_surrogate_hashes_as_its_code_unit() -> None:
    assert java_hash("\ud800") == 0xD800


async def test_the_key_goes_to_partition_zero_end_to_end() -> None:
    def route(word: str) -> str:
        return word

    tree = {
        "stream": {
            "bindings": {
                "route-out-0": {
                    "content-type": "text/plain",
                    "producer": {"partition-key-expression": "payload", "partition-count": 3},
                }
            }
        }
    }
    async with TestApp({"route": route}, properties=tree) as app:
        await app.send("route-in-0", b"polygenelubricants")
        out = await app.receive("route-out-0")
        assert (out.key, out.partition) == ("polygenelubricants", 0)
