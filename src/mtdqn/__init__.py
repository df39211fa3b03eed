"""mtdqn: multi-task deep Q-learning with shared representations (D'Eramo et al., ICLR 2020)."""

__version__ = "0.1.0"
