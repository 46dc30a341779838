"""Card 4, Improve: self-train the planner on the examples; before/after accuracy."""

from __future__ import annotations

import html
from typing import Any

import panel as pn

from builder.interfaces.app.jobs import StepCard
from builder.interfaces.app.state import AppState
from builder.interfaces.views import bars_svg


class ImprovePanel(StepCard):
    """The Improve card (a job on a thread; Cancel stops it between training steps and saves no
    planner)."""

    step, label, uses_runtime = "improve", "Improve", True

    def __init__(self, state: AppState):
        super().__init__(state)
        W = pn.widgets  # noqa: N806
        self.rounds = W.IntInput(label="Rounds", value=1, start=1, end=5, width=80)
        self.improve_k = W.IntInput(label="Readings per query", value=4, start=1, end=16, width=130)
        self.improve_steps = W.IntInput(label="Steps", value=30, start=1, end=1000, width=90)
        self.improve_button = W.Button(label="Improve the planner", color="primary")
        self.improve_view = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["vf-result", "vf-improve-result"])
        self.improve_button.on_click(state.action(self.start))
        state.buttons.append(self.improve_button)

    def inputs(self) -> dict[str, Any]:
        """The card's settings: rounds, candidates per query and training steps."""
        return {"rounds": self.rounds.value, "k": self.improve_k.value, "steps": self.improve_steps.value}

    def job_params(self, rounds: int = 1, k: int = 4, steps: int = 30, **options: Any) -> dict[str, Any]:
        """The Improve step's parameters (half the examples held out for evaluation)."""
        return {"rounds": int(rounds), "k": int(k), "steps": int(steps), "eval_fraction": 0.5, **options}

    def improve(self, rounds: int = 1, k: int = 4, steps: int = 30, **options: Any) -> dict:
        """Self-train the planner on the examples (the Improve step) as a job; waits, shows before/after."""
        return self.execute(rounds=rounds, k=k, steps=steps, **options)

    def show(self, report: dict, params: dict[str, Any]) -> None:
        """The before/after chart of a finished Improve; later proposals use the adapted planner."""
        self.render(report)
        self.say("Improve finished: the adapted planner is used by Generate from now on.")

    def render(self, report: dict[str, Any]) -> None:
        """Planner accuracy before and after each round (with n), the kept readings, the planner's folder."""
        bars = [("before", (report.get("before") or {}).get("accuracy"))]
        bars += [(f"round {r.get('round', i + 1)}", (r.get("eval") or {}).get("accuracy"))
                 for i, r in enumerate(report.get("rounds", []))]
        kept = sum(r.get("kept_total", 0) or 0 for r in report.get("rounds", []))
        self.improve_view.object = (
            bars_svg(bars, "planner accuracy on held-out examples", n=report.get("eval_examples")) +
            f"<div><small>{kept} kept reading(s); adapted planner saved to "
            f"<code>{html.escape(str(report.get('planner', '')))}</code>; later proposals use it.</small></div>")

    def buttons(self) -> list[pn.widgets.Button]:
        """The button that starts the step."""
        return [self.improve_button]

    def views(self) -> list[pn.viewable.Viewable]:
        """The step's result views."""
        return [self.improve_view]

    def layout(self, **card: Any) -> pn.Card:
        """The card's layout."""
        return pn.Card(pn.Row(self.rounds, self.improve_k, self.improve_steps), self.improve_button,
                       self.job_view.layout(), self.improve_view, title="4 · Improve the planner", css_classes=["vf-card", f"vf-card-{self.step}"], **card)
