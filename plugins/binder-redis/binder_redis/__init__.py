"""A Redis Streams binder for ``binder``, installed as a plugin like any third party's.

Importing this package (or its ``plugin`` module) does not import redis-py: the binder
type's factory does, so apps that do not use Redis never pay for it at start-up.
"""

__version__ = "0.1.0"
