"""The VisForge Panel app for workshops: the whole workflow, Task → Program → Run → Improve →
Augment → Fine-tune → Export, over one workspace.

    visforge app --workspace ws/ --port 5006          # serve on 127.0.0.1:5006
    serve_app(5006, "ws/")                             # the same from Python
    create_app("ws/")                                  # the Panel viewable (notebooks: display it)

One module per card (``task``, ``program``, ``run``, ``improve``, ``augment``, ``finetune``,
``export``, ``search``), each a class over the session's shared ``AppState`` (``state``);
``page`` lays them out and serves them. Every button calls a public method of its card
(``app.task.create_task``, ``app.program.generate``, ``app.run.run``, ``app.improve.improve``
...), so scripts and tests drive the app without a browser. Long steps run as jobs of the one
job engine (``builder.start_step``; ``jobs`` follows them): a button starts one
(``app.run.start()`` returns the job), the card's method starts it and waits. One job per
workspace at a time, shown inside its card with a progress bar, elapsed time and a Cancel that
stops the work (sandboxed programs are killed; Augment, Fine-tune and Export run in a child
process that is killed) and saves nothing. The engine records jobs under ``<ws>/jobs/``, so a
reloaded page shows the running job (or, after a server restart, an interrupted one to
resume); stopping the server cancels its jobs. Nothing is lost: a task is only replaced
explicitly and the old one stays restorable; uploads are decoded before anything is saved;
runs on an earlier task card are marked stale.
"""

from builder.interfaces.app.jobs import JobWatcher, StepCard
from builder.interfaces.app.page import CSS, VisForgeApp, create_app, serve_app
from builder.interfaces.app.state import AppState

__all__ = ["CSS", "AppState", "JobWatcher", "StepCard", "VisForgeApp", "create_app", "serve_app"]
