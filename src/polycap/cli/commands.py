"""Every command of the CLI by name; :mod:`polycap.cli.app` attaches them to the Typer app.

A new command is a function in its own module (importing :mod:`polycap.cli.common`, never the app)
and one line here.
"""

from polycap.cli import batch, caption, evaluate, finetune, models, serve, train

COMMANDS = {
    "batch": batch.batch_cmd,
    "caption": caption.caption_cmd,
    "eval": evaluate.eval_cmd,
    "score": evaluate.score_cmd,
    "finetune": finetune.finetune_cmd,
    "models": models.models_cmd,
    "serve": serve.serve_cmd,
    "train": train.train_cmd,
    "merge-adapters": train.merge_adapters_cmd,
}
