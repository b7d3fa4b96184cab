"""Tests of cafe_core.cli"""
