"""Tasks: what a task is and how its environment is built."""

from mtdqn.tasks.classic_envs import register_envs
from mtdqn.tasks.control import TaskSpec, make_env, make_vector_task, task_specs
from mtdqn.tasks.vector import GymVectorTask, VectorStep, VectorTask

register_envs()

__all__ = [
    "GymVectorTask",
    "TaskSpec",
    "VectorStep",
    "VectorTask",
    "make_env",
    "make_vector_task",
    "register_envs",
    "task_specs",
]
