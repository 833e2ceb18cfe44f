"""Tests of delivery.cli."""
