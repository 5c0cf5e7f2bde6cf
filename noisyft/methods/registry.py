"""The method registry: ``METHODS.get(name)(ctx) -> MethodOutput``."""
from noisyft.registry import Registry

METHODS: Registry = Registry("method")
