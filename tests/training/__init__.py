"""Tests of cafe_core.training"""
