"""Tests of cafe_core.models"""
