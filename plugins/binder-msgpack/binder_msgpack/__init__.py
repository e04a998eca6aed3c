"""A MessagePack content type for ``binder``, installed as a plugin like any third party's."""

__version__ = "0.1.0"
