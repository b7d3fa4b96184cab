"""Tests of cafe_core.data"""
