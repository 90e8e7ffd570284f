"""Import every command module so each attaches itself to the app."""

from polycap.cli import batch, caption, evaluate, finetune, models, serve, train  # noqa: F401
