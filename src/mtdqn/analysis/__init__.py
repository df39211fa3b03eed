"""Shared-feature analysis: states from trained agents, embeddings, sharing metrics, overlap, report."""
