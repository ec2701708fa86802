"""Feature handlers: one module per feature, each with a `setup(registry)` function.

Adding a feature means adding its module name to FEATURES; nothing else in the core changes.
"""

from __future__ import annotations

import importlib

from bot.dispatcher import Registry

FEATURES = [
    "handlers.welcome",
    "handlers.admins",
    "handlers.help",
    "handlers.checkin",
    "handlers.lottery",
    "handlers.push",
    "handlers.campaign",
    "handlers.faq",
]


def load_features(registry: Registry, features: list[str] | None = None) -> Registry:
    for name in features or FEATURES:
        module = importlib.import_module(name)
        module.setup(registry.feature(name.rsplit(".", 1)[-1]))
    return registry
