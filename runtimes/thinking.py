"""Qwen3's budget-capped thinking: the one stop-thinking text, shared by runtime, training and manifest."""

# Qwen's thinking-budget recipe (Qwen3 repo, docs/source/getting_started/thinking_budget.md;
# Qwen3 Technical Report §4.3): when the budget runs out, this is fed to the model token by token.
STOP_THINKING_TEXT = (
    "\n\nConsidering the limited time by the user, I have to give the solution based on the thinking directly now.\n"
    "</think>\n\n"
)


class ThinkingBudget:
    """Counts tokens inside <think>; once `budget` are generated without </think>, hands back the
    stop-thinking token ids to feed, one per step. `budget=None` is unlimited."""

    def __init__(self, budget: int | None, think_open: int, think_close: int, stop_ids: list[int]):
        self.budget = budget
        self.think_open, self.think_close = think_open, think_close
        self.stop_ids = stop_ids
        self.inside = False
        self.done = False
        self.generated = 0  # tokens the model produced inside <think>
        self.stopped_by_budget = False
        self._forced: list[int] = []

    def forced_token(self) -> int | None:
        """The next token to feed instead of sampling, if the budget forces one."""
        return self._forced.pop(0) if self._forced else None

    def observe(self, token: int, forced: bool) -> None:
        if not self.inside:
            if token == self.think_open and not self.done:
                self.inside = True
            return
        if token == self.think_close:
            self.inside, self.done = False, True
            return
        if forced:
            return
        self.generated += 1
        if self.budget is not None and self.generated >= self.budget:
            self.stopped_by_budget = True
            self._forced = list(self.stop_ids)
