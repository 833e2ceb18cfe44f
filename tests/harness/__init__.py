"""Tests of delivery.harness."""
