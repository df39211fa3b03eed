"""Settings of ``mtdqn analyze``: one dataclass, saved as ``analysis/config.json`` beside the results."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from mtdqn.errors import UserError

METHODS = ("tsne", "pca")


@dataclass
class AnalysisConfig:
    """How states are collected, embedded and compared. Defaults follow the review's control analysis
    (1,000 greedy states per task, t-SNE with perplexity 30), seeded."""

    steps: int = 1000
    """States recorded per task: the state before each of ``steps`` rollout steps (resets on episode end)."""
    epsilon: float = 0.0
    """Exploration of the rollout policy; 0 = greedy, as the review's trained agents acted."""
    seed: int = 0
    """Seeds the rollout's environments, its exploration, the embedding and the probes (with the member's
    own seed, so each member of a population gets its own streams)."""
    method: str = "tsne"
    """``tsne`` (openTSNE, FFT-accelerated) or ``pca`` (two principal components, instant)."""
    perplexity: float = 30.0
    """t-SNE perplexity (the review's and scikit-learn's default); at most (N - 1) / 3 for N embedded states
    (openTSNE looks at 3 x perplexity neighbours), else refused."""
    tsne_iterations: int = 500
    """t-SNE optimisation steps after the 250 steps of early exaggeration."""
    tsne_learning_rate: float = 0.0
    """t-SNE learning rate; 0 = openTSNE's ``auto`` (N / 12, Belkina et al. 2019)."""
    tsne_early_exaggeration: float = 12.0
    """t-SNE early exaggeration (the review's scikit-learn versions used 12)."""
    tsne_threads: int = 2
    """Threads of t-SNE from 2,000 states on (one below: faster there). openTSNE's result depends on its
    thread count, so it is a setting, recorded with the others, not the machine's core count."""
    neighbours: int = 10
    """k of the k-nearest-neighbour task mixing and of the overlap search, in shared-feature space; below
    the number of states, else refused."""
    overlap_per_pair: int = 3
    """Overlap states drawn as pictures for every pair of tasks."""
    thumbnail_width: int = 120
    """Width in pixels of the frames shown on hover in the HTML report."""
    probe_folds: int = 5
    """Cross-validation folds of the linear probes (task id and value)."""
    gradient_batches: int = 0
    """Replay batches over which each task's gradient on the shared layers is averaged
    (:mod:`mtdqn.analysis.gradients`); 0 = not computed (it loads the run's replay memory)."""

    def validate(self) -> None:
        """Raise :class:`UserError` naming the first bad field."""
        checks = [
            (self.steps >= 10, "--steps must be at least 10"),
            (0.0 <= self.epsilon <= 1.0, "--epsilon must lie in [0, 1]"),
            (self.method in METHODS, f"--method must be one of {', '.join(METHODS)}"),
            (self.perplexity > 0, "--perplexity must be positive"),
            (self.tsne_iterations > 0, "--tsne-iterations must be positive"),
            (self.tsne_learning_rate >= 0, "--tsne-learning-rate must be 0 (auto) or positive"),
            (self.tsne_early_exaggeration >= 1, "--tsne-early-exaggeration must be at least 1"),
            (self.tsne_threads >= 1, "--tsne-threads must be at least 1"),
            (self.neighbours >= 1, "--neighbours must be at least 1"),
            (self.overlap_per_pair >= 0, "--overlap-per-pair must be 0 or more"),
            (16 <= self.thumbnail_width <= 400, "--thumbnail-width must lie in [16, 400]"),
            (self.probe_folds >= 2, "--probe-folds must be at least 2"),
            (self.gradient_batches >= 0, "--gradient-batches must be 0 (off) or more"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    def check_state_count(
        self,
        n_tasks: int,
        embedded_tasks: int | None = None,
        steps_flag: str = "--steps",
        tunable: bool = True,
    ) -> None:
        """Refuse, before any rollout, a k-NN or t-SNE that the recorded states cannot support: ``steps`` per
        task of ``n_tasks`` tasks, of which the smallest embedding (a comparison embeds the shared tasks
        only) holds ``embedded_tasks`` (default all). ``steps_flag`` and ``tunable`` (whether --neighbours
        and --perplexity can be given) word the fix."""
        n_states = self.steps * n_tasks
        if self.neighbours >= n_states:
            fix = f"--neighbours {n_states - 1} or less, or " if tunable else ""
            raise UserError(
                f"the k-NN of {self.neighbours} neighbours needs more than {self.neighbours} states, but "
                f"{self.steps} steps x {n_tasks} task(s) record {n_states}; give {fix}{steps_flag} "
                f"{self.neighbours // n_tasks + 1} or more"
            )
        n_embedded = self.steps * (embedded_tasks or n_tasks)
        if self.method == "tsne" and 3 * self.perplexity > n_embedded - 1:
            most = math.floor((n_embedded - 1) / 3)
            fix = f"--perplexity {most} or less, or " if tunable and most > 0 else ""
            steps = math.ceil((3 * self.perplexity + 1) / (embedded_tasks or n_tasks))
            alternative = "" if tunable else ", or --analyze-method pca"
            needed = math.ceil(3 * self.perplexity + 1)
            raise UserError(
                f"t-SNE with perplexity {self.perplexity:g} needs at least {needed} "
                f"states (3 x perplexity + 1), but it would embed {n_embedded} ({self.steps} steps x "
                f"{embedded_tasks or n_tasks} task(s)); give {fix}{steps_flag} {steps} or more{alternative}"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def rollout_key(self) -> dict:
        """The fields that decide which states are collected (a change means a new rollout)."""
        return {"steps": self.steps, "epsilon": self.epsilon, "seed": self.seed}
