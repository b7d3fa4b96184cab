"""Tests of cafe_core.evaluation"""
