"""Tests of cafe_core.causal"""
