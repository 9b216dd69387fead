"""Coalmine: shadow tests, canary releases and anytime-valid analysis for ML models."""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # `coalmine.Client` without importing httpx for every `import coalmine`
    if name == "Client":
        from coalmine.client import Client

        return Client
    if name == "Router":
        from coalmine.collect.router import Router

        return Router
    raise AttributeError(f"module 'coalmine' has no attribute {name!r}")
