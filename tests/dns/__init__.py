"""Tests of delivery.dns."""
