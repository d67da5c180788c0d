"""Analyses of trained models: plain functions returning tensors and matplotlib figures."""

from .pos_similarity import has_learned_table, plot_position_similarity, position_similarity

__all__ = ["position_similarity", "plot_position_similarity", "has_learned_table"]
