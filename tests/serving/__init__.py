"""Tests of cafe_core.serving"""
