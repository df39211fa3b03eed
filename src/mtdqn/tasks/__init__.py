"""Tasks: what a task is and how its environment is built."""

from mtdqn.tasks.classic_envs import register_envs
from mtdqn.tasks.control import TaskSpec, make_env, task_specs

register_envs()

__all__ = ["TaskSpec", "make_env", "register_envs", "task_specs"]
