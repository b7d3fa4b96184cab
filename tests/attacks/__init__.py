"""Tests of cafe_core.attacks"""
