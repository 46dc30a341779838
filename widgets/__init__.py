"""VisForge widgets: one composite ipywidget per workflow step, all reading/writing a Workspace.

    from widgets import TaskWidget, PlanWidget, ExportWidget
    task = TaskWidget("ws/")           # describe the task, add examples, save
    plan = PlanWidget("ws/")           # propose / edit / run / trace / accept
    ExportWidget("ws/").export()       # build the installable solution

Every button calls a public method (``save``, ``propose``, ``run``, ``accept``, ``export`` ...)
that notebooks and tests call directly. The widgets are a thin layer over the workflow API
(``from builder import ...``), which the Panel app, the CLI and notebooks share.
"""

from builder import Runtime, ensure_shapes_workspace
from builder.interfaces.demo import run_notebook_demo
from widgets._base import NotAvailable, StepWidget
from widgets.export import ExportWidget
from widgets.plan import PlanWidget
from widgets.search import SearchWidget
from widgets.steps import AugmentWidget, FinetuneWidget, ImproveWidget
from widgets.task import TaskWidget

__all__ = [
    "AugmentWidget",
    "ExportWidget",
    "FinetuneWidget",
    "ImproveWidget",
    "NotAvailable",
    "PlanWidget",
    "SearchWidget",
    "Runtime",
    "StepWidget",
    "TaskWidget",
    "ensure_shapes_workspace",
    "run_notebook_demo",
]
