"""Tracing a model into dependency groups (``trace``) and removing maps from them (``Graph.remove``)."""

from .graph import Graph, Group, LayerCost, Member, trace

__all__ = ["Graph", "Group", "LayerCost", "Member", "trace"]
