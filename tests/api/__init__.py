"""Tests of delivery.api."""
