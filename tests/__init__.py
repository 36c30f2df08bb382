"""The test suite, a package so that its helper modules import one way: ``from tests.<module> import ...``."""
